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
    "dockyard_host_images": ("gauge", "images a host holds, by host (its last inventory)"),
    "dockyard_host_work_total": ("counter", "host work confirmed, by kind (pull, delete) and result"),
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
