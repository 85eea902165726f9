"""The cache's background jobs in ``dockyard serve`` (each run by a lifecycle Runner with jitter):
clean, prune (above the high watermark), the prefetch queue, and the replica heartbeat that
lets an admin call fan out to every replica's cache."""

from __future__ import annotations

import socket
import threading
import time

from dockyard.cache import maintenance
from dockyard.cache.prefetch import PrefetchJob
from dockyard.config import Config
from dockyard.meta.replicas import ReplicaStore
from dockyard.report import Report, timed

HEARTBEAT = 15.0
"""Seconds between registrations; a replica unseen for 4 of them is left out of fan-outs."""


def advertise_address(cfg: Config) -> str:
    if cfg.cache_advertise_url:
        return cfg.cache_advertise_url.rstrip("/")
    host, port = cfg.host_port
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    scheme = "https" if cfg.tls_cert else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


class CleanJob:
    job = "cache-clean"

    def __init__(self, reg):
        self.reg = reg

    def run(self) -> Report:
        with timed(Report(self.job, kinds={})) as report:
            r = maintenance.clean(self.reg.cache, self.reg.config.cache_stall_time)
            report.count("entries", r.total_files_cleaned, r.total_bytes_cleaned)
        return report


class PruneJob:
    job = "cache-prune"

    def __init__(self, reg):
        self.reg = reg

    def run(self) -> Report:
        with timed(Report(self.job, kinds={})) as report:
            r = maintenance.prune(self.reg.cache, only_above_high=True)
            report.count("entries", r.total_files_pruned, r.total_bytes_pruned)
        return report


class HeartbeatJob:
    job = "cache-replicas"

    def __init__(self, reg):
        self.reg = reg

    def run(self) -> Report:
        with timed(Report(self.job, kinds={})) as report:
            self._beat()
            report.count("replicas", 1)
        return report

    def _beat(self) -> None:
        now = self.reg.now()
        stats = replica_stats(self.reg, flush=True)
        with self.reg.db.write() as conn:
            store = ReplicaStore(conn)
            store.heartbeat(advertise_address(self.reg.config), now, stats)
            store.forget_older(now - 86400)


def replica_stats(reg, *, flush: bool = False) -> dict:
    """This replica's cache figures: entries, bytes, its bound, hits, misses and bytes served
    from the cache and from storage (every process's, through the index)."""
    cache = reg.cache
    if flush:
        cache.index.add_stats(cache.take_counts())
    entries, size = cache.index.totals()
    return {"entries": entries, "bytes": size, "max_size": cache.max_size, **cache.counts()}


def live_replicas(reg) -> list[str]:
    with reg.db.read() as conn:
        return ReplicaStore(conn).live(reg.now() - 4 * HEARTBEAT)


def _wake_or_wait(event: threading.Event):
    """A Runner wait that also ends early when ``event`` is set (a prefetch was queued)."""

    def wait(stop: threading.Event, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if event.wait(min(left, 0.5)):
                event.clear()
                return stop.is_set()
        return True

    return wait


def cache_jobs(reg) -> list[dict]:
    """Runner arguments of every cache job this replica runs; none without a cache."""
    if reg.cache is None:
        return []
    cfg = reg.config
    return [
        dict(name="cache-clean", make_job=lambda: CleanJob(reg), interval=cfg.cache_clean_interval),
        dict(name="cache-prune", make_job=lambda: PruneJob(reg), interval=cfg.cache_prune_interval),
        dict(name="cache-prefetch", interval=cfg.cache_prefetch_interval, wait=_wake_or_wait(reg.cache.wakeup),
             make_job=lambda: PrefetchJob(reg.cache, reg.db, workers=cfg.cache_prefetch_workers,
                                          platforms=cfg.cache_prefetch_platforms)),
        dict(name="cache-replicas", make_job=lambda: HeartbeatJob(reg), interval=HEARTBEAT),
    ]
