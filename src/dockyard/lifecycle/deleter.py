"""Storage deletes for claimed tombstones: a worker pool under a rate limit.

A failed delete is recorded on its tombstone and retried later with exponential
backoff; it never blocks the others.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from dockyard.lifecycle.ratelimit import WindowLimiter
from dockyard.meta.gc import Tombstone
from dockyard.storage.base import Deleter

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeleteResult:
    tombstone: Tombstone
    error: str | None


class DeletePool:
    def __init__(self, storage: Deleter, workers: int, limiter: WindowLimiter):
        self.storage = storage
        self.limiter = limiter
        self.workers = max(1, workers)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="dockyard-delete")

    def _delete(self, t: Tombstone) -> DeleteResult:
        self.limiter.acquire()
        try:
            self.storage.delete(t.key)
        except Exception as exc:  # any driver failure: recorded on the tombstone, retried later
            log.warning("delete of %s failed (attempt %d): %s", t.key, t.attempts + 1, exc)
            return DeleteResult(t, f"{type(exc).__name__}: {exc}")
        return DeleteResult(t, None)

    def delete_all(self, tombstones: list[Tombstone], on_done: Callable[[DeleteResult], None] | None = None
                   ) -> list[DeleteResult]:
        results = []
        for result in self._pool.map(self._delete, tombstones):
            results.append(result)
            if on_done:
                on_done(result)
        return results

    def close(self) -> None:
        self._pool.shutdown(wait=True)
