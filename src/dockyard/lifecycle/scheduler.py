"""The background jobs of ``dockyard serve``: which run, how often, and who may run them.

Each job is a :class:`~dockyard.lifecycle.runner.Runner` around a job object (the collector,
the scrubber, a scheduled prune, the pull-time flush); the runner owns looping, jitter,
backoff and stopping. A scheduled prune is a singleton among replicas (a database lease);
the collector and the scrubber run in every replica and share their queues.
"""

from __future__ import annotations

import time

from dockyard.cache.jobs import cache_jobs
from dockyard.lifecycle.collector import Collector
from dockyard.lifecycle.prune import Pruner
from dockyard.report import Report
from dockyard.lifecycle.runner import Runner, lease_gate
from dockyard.lifecycle.scrubber import Scrubber
from dockyard.lifecycle.usage import UsageSampler
from dockyard.meta.stores import Stores


def scheduled_jobs(reg) -> list[Runner]:
    """The runners ``dockyard serve`` starts for ``reg`` (the process's Registry)."""
    cfg = reg.config
    runners = []
    if cfg.gc_enabled:
        runners.append(Runner("gc", lambda: Collector.for_registry(reg), cfg.gc_interval))
    if cfg.scrub_enabled:
        runners.append(Runner("scrub", lambda: Scrubber.for_registry(reg), cfg.wakeup_time))
    for policy in cfg.retention.values():
        if policy.schedule:  # a singleton: one replica at a time, through a database lease
            runners.append(Runner(f"prune-{policy.name}",
                                  lambda p=policy: Pruner(reg, p, confirm=True, actor="schedule"),
                                  policy.schedule,
                                  gate=lease_gate(reg.db, f"prune:{policy.name}", policy.schedule * 1.5, reg.clock)))
    runners.append(Runner("pulls", lambda: _PullFlush(reg), cfg.pull_flush_interval, jitter=0.0))
    if cfg.usage_sample_interval > 0:  # one sample per interval among replicas: a lease
        runners.append(Runner("usage", lambda: UsageSampler(reg), cfg.usage_sample_interval,
                              gate=lease_gate(reg.db, "usage", cfg.usage_sample_interval * 0.9, reg.clock)))
    runners += [Runner(**spec) for spec in cache_jobs(reg)]
    return runners


class _PullFlush:
    """Writes the pull times recorded in memory, as one background job."""

    job = "pulls"

    def __init__(self, reg):
        self.reg = reg

    def run(self) -> Report:
        report = Report(self.job, kinds={})
        started = time.monotonic()
        report.count("pulls", self.reg.pulls.flush(self.reg.db))
        report.duration = time.monotonic() - started
        return report


def gc_status(reg, runs: int = 10) -> dict:
    """The backlog of every review queue, what still waits for its grace (entries, and when
    the first falls due), and the last collections' reports."""
    now = reg.now()
    with reg.db.read() as conn:
        q = Stores(conn)
        return {"backlog": q.reviews.backlog(now),
                "waiting": {name: {"entries": n, "first_due": first} for name, (n, first) in q.reviews.waiting(now).items()},
                "runs": q.runs.recent("gc", runs)}


def recent_runs(reg, job: str, limit: int = 20) -> list[dict]:
    """The last recorded runs of a job (gc, scrub), newest first."""
    with reg.db.read() as conn:
        return Stores(conn).runs.recent(job, limit)
