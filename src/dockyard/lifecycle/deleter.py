"""Storage deletes for claimed tombstones: batches over a worker pool, under a rate limit.

Blob tombstones go in batches, one ``delete_many`` call each (at most :data:`MAX_BATCH`
keys, the cap of S3's DeleteObjects and of Ceph RGW 16.2), the batches spread over the
worker pool; an upload session's staging data may be several objects (S3: an index and its
parts), so each upload tombstone is its own ``delete`` call. The rate limiter counts
objects: a batch takes as many tokens as it has keys, and no batch is larger than the
limiter's one-second capacity. A deleter whose class has no ``delete_many`` (a test double,
a wrapper that overrides ``delete`` and forwards the rest by ``__getattr__``, which a
forwarded ``delete_many`` would bypass) is deleted key by key: batches of one ``delete``.

Every tombstone gets its own result: a key that failed (alone, or with the whole call) is
recorded on its tombstone and retried later with exponential backoff; it never holds the
others back.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from dockyard.lifecycle.ratelimit import WindowLimiter
from dockyard.meta.tombstones import Tombstone
from dockyard.storage.base import Deleter

log = logging.getLogger(__name__)

MAX_BATCH = 1000
"""Keys per ``delete_many`` call: S3 DeleteObjects takes at most 1,000 (so does Ceph RGW 16.2)."""


@dataclass(frozen=True, slots=True)
class DeleteResult:
    tombstone: Tombstone
    error: str | None


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class InFlight:
    """The batches of one :meth:`DeletePool.start`; :meth:`result` waits for all of them."""

    def __init__(self, futures: list[Future]):
        self._futures = futures

    def __len__(self) -> int:
        return len(self._futures)

    def joined(self, other: InFlight) -> InFlight:
        """These batches and ``other``'s, waited for together."""
        return InFlight(self._futures + other._futures)

    def result(self) -> list[DeleteResult]:
        return [r for f in self._futures for r in f.result()]


class DeletePool:
    def __init__(self, storage: Deleter, workers: int, limiter: WindowLimiter, max_batch: int = MAX_BATCH):
        self.storage = storage
        self.limiter = limiter
        self.workers = max(1, workers)
        batched = callable(getattr(type(storage), "delete_many", None))
        self.max_batch = max(1, min(max_batch, limiter.capacity or max_batch)) if batched else 1
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="dockyard-delete")

    def batches(self, tombstones: list[Tombstone]) -> list[list[Tombstone]]:
        """Uploads one by one; the rest in up to ``max_batch`` keys, split evenly enough that
        every worker has a batch to send while there are keys for it."""
        single = [[t] for t in tombstones if t.kind == "upload"]
        rest = [t for t in tombstones if t.kind != "upload"]
        if not rest:
            return single
        size = min(self.max_batch, -(-len(rest) // self.workers))
        return [rest[i:i + size] for i in range(0, len(rest), size)] + single

    def _delete(self, batch: list[Tombstone], expired: Callable[[], bool] | None = None) -> list[DeleteResult]:
        self.limiter.acquire(len(batch))
        if expired is not None and expired():
            # the tombstones' lease may run out before this call returns: a push could cancel
            # one meanwhile and bring its data back; send nothing, retry under a new lease
            return [DeleteResult(t, "lease ran out before the delete was sent") for t in batch]
        if len(batch) == 1 and (self.max_batch == 1 or batch[0].kind == "upload"):
            t = batch[0]
            try:
                self.storage.delete(t.key)
            except Exception as exc:  # any driver failure: recorded on the tombstone, retried later
                log.warning("delete of %s failed (attempt %d): %s", t.key, t.attempts + 1, exc)
                return [DeleteResult(t, _describe(exc))]
            return [DeleteResult(t, None)]
        try:
            outcome = self.storage.delete_many([t.key for t in batch])
        except Exception as exc:  # the call failed as a whole: each of its keys is retried later
            log.warning("delete of %d keys (%s, ...) failed: %s", len(batch), batch[0].key, exc)
            return [DeleteResult(t, _describe(exc)) for t in batch]
        results = []
        for t in batch:
            if t.key not in outcome:
                error: str | None = f"{type(self.storage).__name__}.delete_many gave no result for this key"
            else:
                exc = outcome[t.key]
                error = None if exc is None else _describe(exc)
            if error is not None:
                log.warning("delete of %s failed (attempt %d): %s", t.key, t.attempts + 1, error)
            results.append(DeleteResult(t, error))
        return results

    def start(self, tombstones: list[Tombstone], expired: Callable[[], bool] | None = None) -> "InFlight":
        """Start deleting without waiting: the caller does other work meanwhile. No delete is
        sent once ``expired()`` says the claim's lease is too near its end to outlive the call."""
        return InFlight([self._pool.submit(self._delete, batch, expired) for batch in self.batches(tombstones)])

    def delete_all(self, tombstones: list[Tombstone], on_done: Callable[[DeleteResult], None] | None = None
                   ) -> list[DeleteResult]:
        results = self.start(tombstones).result()
        if on_done:
            for result in results:
                on_done(result)
        return results

    def close(self) -> None:
        self._pool.shutdown(wait=True)
