"""A small Prometheus metrics registry (text exposition format), passed in, never global."""

from __future__ import annotations

import threading
from collections import defaultdict

HELP = {
    "dockyard_gc_reclaimed_objects_total": ("counter", "objects the collector reclaimed, by kind"),
    "dockyard_gc_reclaimed_bytes_total": ("counter", "bytes the collector reclaimed, by kind"),
    "dockyard_gc_failures_total": ("counter", "failed storage deletes, by kind (retried with backoff)"),
    "dockyard_gc_backlog": ("gauge", "review queue entries, by queue and whether they are due"),
    "dockyard_gc_run_seconds_sum": ("counter", "time spent in collector runs"),
    "dockyard_gc_runs_total": ("counter", "collector runs"),
    "dockyard_cache_hits_total": ("counter", "blob reads served from this replica's cache"),
    "dockyard_cache_misses_total": ("counter", "blob reads the cache did not hold"),
    "dockyard_cache_served_bytes_total": ("counter", "blob bytes served, by source (cache or backend)"),
    "dockyard_cache_evictions_total": ("counter", "cache entries evicted, by reason (fill, prune, delete, clear, invalid)"),
    "dockyard_cache_evicted_bytes_total": ("counter", "bytes evicted from the cache, by reason"),
    "dockyard_cache_size_bytes": ("gauge", "bytes the cache holds or has reserved for fills"),
    "dockyard_cache_entries": ("gauge", "cache entries (every state)"),
    "dockyard_cache_prefetch_queue": ("gauge", "prefetch targets queued"),
    "dockyard_cache_verify_failures_total": ("counter", "fills whose bytes failed digest or size verification"),
    "dockyard_cache_uncached_total": ("counter", "misses served without caching, by reason (full, busy, too_large)"),
}


class Metrics:
    def __init__(self) -> None:
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)
        self._lock = threading.Lock()

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        with self._lock:
            self._values[(name, tuple(sorted(labels.items())))] += value

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._values[(name, tuple(sorted(labels.items())))] = value

    def get(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._values.get((name, tuple(sorted(labels.items()))), 0.0)

    def render(self) -> str:
        with self._lock:
            items = sorted(self._values.items())
        out, seen = [], set()
        for (name, labels), value in items:
            if name not in seen:
                seen.add(name)
                kind, text = HELP.get(name, ("untyped", name))
                out.append(f"# HELP {name} {text}\n# TYPE {name} {kind}")
            label_text = ",".join(f'{k}="{v}"' for k, v in labels)
            out.append(f"{name}{{{label_text}}} {value:g}" if label_text else f"{name} {value:g}")
        return "\n".join(out) + "\n"
