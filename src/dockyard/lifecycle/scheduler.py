"""The background jobs of ``dockyard serve``: which run, how often, and who may run them.

Each job is a :class:`~dockyard.lifecycle.runner.Runner` around a job object (the collector,
the scrubber, a scheduled prune, the pull-time flush); the runner owns looping, jitter,
backoff and stopping. A scheduled prune is a singleton among replicas (a database lease);
the collector and the scrubber run in every replica and share their queues.
"""

from __future__ import annotations

from dockyard.cache.jobs import cache_jobs
from dockyard.lifecycle.collector import Collector
from dockyard.lifecycle.prune import Pruner
from dockyard.lifecycle.runner import Runner, lease_gate
from dockyard.lifecycle.scrubber import Scrubber
from dockyard.meta.gc import QueueStore


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
    runners += [Runner(**spec) for spec in cache_jobs(reg)]
    return runners


class _PullFlush:
    """Writes the pull times recorded in memory, as one background job."""

    job = "pulls"

    def __init__(self, reg):
        self.reg = reg

    def run(self):
        return self.reg.pulls.flush(self.reg.db)


def gc_status(reg, runs: int = 10) -> dict:
    """The backlog of every review queue and the last collections' reports."""
    with reg.db.read() as conn:
        q = QueueStore(conn)
        return {"backlog": q.backlog(reg.now()), "runs": q.recent_runs("gc", runs)}
