"""The collector's DeletePool: batches of delete_many, one result per tombstone, a rate
limit that counts objects; and WindowLimiter.acquire(n)."""

import threading

import pytest

from dockyard.lifecycle.deleter import MAX_BATCH, DeletePool
from dockyard.lifecycle.ratelimit import WindowLimiter
from dockyard.meta.tombstones import Tombstone
from dockyard.storage.base import StorageError


def stones(n, kind="blob", prefix="blobs/sha256/aa/"):
    return [Tombstone(f"{prefix}{i}", kind, None, 1, 0) for i in range(n)]


class BatchStore:
    """An in-memory deleter with delete_many; ``bad`` keys fail, ``down`` fails whole calls."""

    def __init__(self, bad=(), down=False):
        self.bad, self.down = set(bad), down
        self.many_calls, self.single_calls = [], []
        self._lock = threading.Lock()

    def delete(self, key):
        with self._lock:
            self.single_calls.append(key)

    def delete_many(self, keys):
        keys = list(keys)
        with self._lock:
            self.many_calls.append(keys)
        if self.down:
            raise StorageError("connection reset", driver="mem")
        return {k: StorageError("denied", driver="mem", key=k) if k in self.bad else None for k in keys}


class OnlyDelete:
    """A deleter with ``delete`` alone, forwarding the rest (as a fault-injecting wrapper does)."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def delete(self, key):
        self.inner.delete(key)


def run(store, tombstones, workers=4, rate=0.0, limiter=None):
    pool = DeletePool(store, workers, limiter or WindowLimiter(rate))
    try:
        return pool.delete_all(tombstones)
    finally:
        pool.close()


def test_blobs_go_in_batches_spread_over_the_workers():
    store = BatchStore()
    results = run(store, stones(200), workers=4)
    assert sorted(len(c) for c in store.many_calls) == [50, 50, 50, 50] and not store.single_calls
    assert len(results) == 200 and all(r.error is None for r in results)


def test_a_batch_holds_at_most_1000_keys():
    store = BatchStore()
    run(store, stones(2500), workers=2)
    assert sorted(len(c) for c in store.many_calls) == [500, 1000, 1000]
    assert max(len(c) for c in store.many_calls) == MAX_BATCH


def test_each_tombstone_gets_its_own_result():
    store = BatchStore(bad={"blobs/sha256/aa/3"})
    results = run(store, stones(10), workers=1)
    assert len(store.many_calls) == 1
    failed = {r.tombstone.key: r.error for r in results if r.error}
    assert list(failed) == ["blobs/sha256/aa/3"] and "denied" in failed["blobs/sha256/aa/3"]
    assert sum(r.error is None for r in results) == 9


def test_a_call_that_fails_as_a_whole_fails_each_of_its_keys():
    results = run(BatchStore(down=True), stones(6), workers=2)
    assert len(results) == 6 and all("connection reset" in r.error for r in results)


def test_uploads_go_one_by_one_through_delete():
    store = BatchStore()
    uploads = stones(3, kind="upload", prefix="uploads/u")
    results = run(store, stones(4) + uploads, workers=2)
    assert sorted(store.single_calls) == [t.key for t in uploads]
    assert sorted(len(c) for c in store.many_calls) == [2, 2] and all(r.error is None for r in results)


def test_a_deleter_without_its_own_delete_many_is_deleted_key_by_key():
    store = BatchStore()
    results = run(OnlyDelete(store), stones(7))
    assert store.many_calls == [] and len(store.single_calls) == 7 and len(results) == 7


def test_the_rate_limit_counts_objects_not_calls():
    t = [0.0]
    lock = threading.Lock()
    stamps = []

    def sleep(s):
        with lock:
            t[0] += s

    class Stamped(BatchStore):
        def delete_many(self, keys):
            keys = list(keys)
            with lock:
                stamps.append((t[0], len(keys)))
            return super().delete_many(keys)

    limiter = WindowLimiter(40, clock=lambda: t[0], sleep=sleep)
    # one worker: a fake clock that sleeping threads advance would stamp a batch late
    results = run(Stamped(), stones(300), workers=1, limiter=limiter)
    assert len(results) == 300 and [n for _, n in stamps] == [40] * 7 + [20]  # no batch beyond one second's worth
    for start, _ in stamps:
        assert sum(n for s, n in stamps if start <= s < start + 1.0) <= 40
    assert max(s for s, _ in stamps) < 300 / 40 + 2  # and it does not starve either


def test_limiter_takes_n_tokens_at_once():
    t = [0.0]
    limiter = WindowLimiter(10, clock=lambda: t[0], sleep=lambda s: t.__setitem__(0, t[0] + s))
    grants = []
    for n in (4, 4, 4, 10, 1):
        limiter.acquire(n)
        grants.append((t[0], n))
    for start, _ in grants:
        assert sum(n for s, n in grants if start <= s < start + 1.0) <= 10
    assert grants[0][0] == grants[1][0] == 0.0 and grants[2][0] > 1.0
    with pytest.raises(ValueError):
        limiter.acquire(11)
    WindowLimiter(0).acquire(10_000)  # unlimited
