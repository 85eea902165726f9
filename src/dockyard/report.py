"""What a run did: the one shape every job's ``run()`` returns.

:class:`RunResult` is what the runner, the CLI and the admin API rely on: a job name, whether
it was a dry run, how long it took, a JSON form and a table. :class:`Report` is the shape of
every other job (collector, scrubber, pull flush, usage, cache jobs, event delivery): per kind of object, counts, bytes and
failures. Retention (``prune.Plan``) and ``fsck`` (``fsck.FsckReport``) return richer results
of the same shape.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

KINDS = ("images", "tags", "manifests", "links", "blobs", "repositories", "uploads", "tombstones")


class RunResult(Protocol):
    job: str
    duration: float

    @property
    def dry_run(self) -> bool: ...

    def as_dict(self) -> dict: ...

    def table(self) -> str: ...


@dataclass
class KindReport:
    objects: int = 0
    bytes: int = 0
    failures: int = 0


@dataclass
class Report:
    job: str
    dry_run: bool = False
    started: float = field(default_factory=time.time)
    duration: float = 0.0
    kinds: dict[str, KindReport] = field(default_factory=lambda: {k: KindReport() for k in KINDS})
    items: list[dict] = field(default_factory=list)
    """In a dry run: every object that would go (kind, id, bytes)."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, kind: str, size: int = 0, item: dict | None = None) -> None:
        with self._lock:
            k = self.kinds.setdefault(kind, KindReport())
            k.objects += 1
            k.bytes += size
            if item is not None and self.dry_run:
                self.items.append({"kind": kind, **item, "bytes": size})

    def count(self, kind: str, objects: int, size: int = 0) -> None:
        """Add ``objects`` objects (``size`` bytes in all) of ``kind`` at once."""
        with self._lock:
            k = self.kinds.setdefault(kind, KindReport())
            k.objects += objects
            k.bytes += size

    def fail(self, kind: str) -> None:
        with self._lock:
            self.kinds.setdefault(kind, KindReport()).failures += 1

    def merge(self, other: "Report") -> None:
        with self._lock:
            for name, k in other.kinds.items():
                mine = self.kinds.setdefault(name, KindReport())
                mine.objects += k.objects
                mine.bytes += k.bytes
                mine.failures += k.failures
            self.items.extend(other.items)

    @property
    def total_objects(self) -> int:
        return sum(k.objects for k in self.kinds.values())

    def as_dict(self) -> dict:
        return {
            "job": self.job,
            "dry_run": self.dry_run,
            "duration_seconds": round(self.duration, 3),
            "kinds": {name: vars(k).copy() for name, k in self.kinds.items()},
            "totals": {"objects": self.total_objects, "bytes": sum(k.bytes for k in self.kinds.values()),
                       "failures": sum(k.failures for k in self.kinds.values())},
            **({"items": self.items} if self.dry_run else {}),
        }

    def table(self) -> str:
        return render(self.as_dict())


def render(data: dict) -> str:
    """The table of a report, from :meth:`Report.as_dict` (local, or as the admin API sent it)."""
    verb = "would reclaim" if data["dry_run"] else "reclaimed"
    lines = [f"{data['job']} {verb} in {data['duration_seconds']:.2f}s",
             f"{'kind':<14}{'objects':>10}{'bytes':>16}{'failures':>10}"]
    for name, k in data["kinds"].items():
        lines.append(f"{name:<14}{k['objects']:>10}{k['bytes']:>16}{k['failures']:>10}")
    return "\n".join(lines)


class timed:
    """``with timed(Report(job, kinds={})) as report: ...``: the report's duration is the block's."""

    def __init__(self, report: Report):
        self.report = report

    def __enter__(self) -> Report:
        self._t0 = time.monotonic()
        return self.report

    def __exit__(self, *exc) -> None:
        self.report.duration = time.monotonic() - self._t0
