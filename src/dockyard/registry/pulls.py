"""Pull times, tracked cheaply: a pull notes the time in memory; a background flush writes
them in one batched statement (never a database write per pull)."""

from __future__ import annotations

import logging
import threading
import time

from dockyard.meta.db import Database, DatabaseUnavailable
from dockyard.meta.retention import RetentionStore

log = logging.getLogger(__name__)


class Throttled:
    """A warning logged at most once per ``interval`` seconds (counting the ones it held back):
    for best-effort writes that fail on every request while the database is read-only."""

    def __init__(self, logger: logging.Logger, interval: float):
        self.logger, self.interval = logger, interval
        self._next, self._held = 0.0, 0
        self._lock = threading.Lock()

    def warn(self, message: str, *args) -> None:
        with self._lock:
            now = time.monotonic()
            if now < self._next:
                self._held += 1
                return
            held, self._held, self._next = self._held, 0, now + self.interval
        self.logger.warning(message + (f" ({held} more since the last report)" if held else ""), *args)


class PullTracker:
    def __init__(self) -> None:
        self._pending: dict[int, float] = {}
        self._lock = threading.Lock()
        self._failures = Throttled(log, 300.0)

    def record(self, manifest_id: int, when: float) -> None:
        with self._lock:
            self._pending[manifest_id] = when

    def flush(self, db: Database) -> int:
        with self._lock:
            pending, self._pending = self._pending, {}
        if pending:
            try:
                with db.write() as conn:
                    RetentionStore(conn).record_pulls(pending)
            except DatabaseUnavailable as exc:  # keep them for the next flush; pulls go on
                with self._lock:
                    for manifest_id, when in pending.items():
                        if self._pending.get(manifest_id, 0) < when:
                            self._pending[manifest_id] = when
                self._failures.warn("cannot record %d pull times yet (%s)", len(pending), exc.reason)
                return 0
        return len(pending)
