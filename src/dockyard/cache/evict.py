"""Deleting the files of evicted entries.

An unlink waits on the disk (its journal and metadata blocks), not on the CPU: 0.05-2 ms each
on a busy disk, so one thread unlinking 15,000 files takes seconds. Unlinks release the GIL,
so a few threads overlap those waits. Each thread gets a slice of the files (one task per
slice, not one per file: a future per file costs more Python than the unlink itself).

:class:`Unlinker` keeps its threads for a whole prune and lets the caller choose and mark the
next batch of victims in the index while the previous batch's files are being deleted.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Self

UNLINKERS = 32
"""Threads that unlink at the same time (they wait on the disk, not the CPU)."""
SLICE = 32
"""Files per task; fewer than this many files are unlinked by the calling thread."""


def unlink_each(paths: list[str]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _slices(paths: list[str], parts: int) -> list[list[str]]:
    parts = max(1, min(parts, len(paths) // SLICE))
    return [paths[i::parts] for i in range(parts)]


class Unlinker:
    """A pool of unlink threads; :meth:`start` returns a handle whose :meth:`Pending.wait`
    returns once every file of the batch is gone (or raises the first error)."""

    def __init__(self, threads: int = UNLINKERS):
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None

    def start(self, paths: list[str]) -> Pending:
        if len(paths) < SLICE:
            unlink_each(paths)
            return Pending([])
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="dockyard-cache-evict")
        return Pending([self._pool.submit(unlink_each, part) for part in _slices(paths, self.threads)])

    def unlink(self, paths: list[str]) -> None:
        self.start(paths).wait()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Pending:
    def __init__(self, futures: list[Future]):
        self._futures = futures

    def wait(self) -> None:
        for f in self._futures:
            f.result()
