"""One runner owns looping, jitter, backoff and stopping for every background job.

A job is anything with ``run() -> RunResult`` (dockyard/report.py). ``dockyard serve`` starts runners in its
lifespan; ``--daemon`` commands run one in the foreground.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from typing import Callable, Protocol

from dockyard.report import RunResult
from dockyard.meta.db import DatabaseUnavailable
from dockyard.meta.leases import LeaseStore

log = logging.getLogger(__name__)


class Job(Protocol):
    job: str

    def run(self) -> RunResult: ...


def lease_gate(db, name: str, ttl: float, clock=None) -> Callable[[], bool]:
    """A gate that lets a singleton job run only in the replica holding the database lease."""
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    now = clock.now if clock else time.time

    def gate() -> bool:
        with db.write() as conn:
            return LeaseStore(conn).acquire(name, holder, now(), ttl)

    return gate


class Runner:
    def __init__(self, name: str, make_job: Callable[[], Job], interval: float, *, jitter: float = 0.2,
                 backoff_max: float = 600.0, stop: threading.Event | None = None,
                 wait: Callable[[threading.Event, float], bool] | None = None,
                 gate: Callable[[], bool] | None = None):
        self.name = name
        self.make_job = make_job
        self.interval = interval
        self.jitter = jitter
        self.backoff_max = backoff_max
        self.stop_event = stop or threading.Event()
        self.wait = wait or (lambda ev, t: ev.wait(t))
        self.gate = gate
        self.cycles = 0
        self.skipped = 0
        self.failures = 0
        self._thread: threading.Thread | None = None

    def next_delay(self) -> float:
        if self.failures:
            return min(self.backoff_max, self.interval * (2 ** min(self.failures, 10)))
        return self.interval * (1 + random.uniform(-self.jitter, self.jitter))

    def run_cycle(self) -> RunResult | None:
        try:
            if self.gate is not None and not self.gate():
                self.skipped += 1  # another replica holds the lease
                return None
            report = self.make_job().run()
        except DatabaseUnavailable as exc:  # an outage, not a bug: one line, no traceback
            self.failures += 1
            reason = (str(exc.__cause__ or exc).splitlines() or ["?"])[0]
            log.warning("%s: database unavailable (%s); backing off (%d in a row)", self.name, reason,
                        self.failures)
            return None
        except Exception:  # the runner is the boundary: log, back off, keep the daemon alive
            self.failures += 1
            log.exception("%s: run failed (%d in a row); backing off", self.name, self.failures)
            return None
        finally:
            self.cycles += 1
        self.failures = 0
        return report

    def run_forever(self, max_cycles: int | None = None) -> None:
        # a random first delay spreads replicas that start together
        if self.wait(self.stop_event, random.uniform(0, self.interval * self.jitter)):
            return
        while not self.stop_event.is_set():
            self.run_cycle()
            if max_cycles is not None and self.cycles >= max_cycles:
                return
            if self.wait(self.stop_event, self.next_delay()):
                return

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run_forever, name=f"dockyard-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_event.set()
        if self._thread:
            self._thread.join(timeout)
