"""The collector's storage deletes in batches (delete_many), on every backend: each
tombstone is settled from its own key's result."""


from dockyard.lifecycle.collector import Collector
from dockyard.meta import schema
from dockyard.storage import paths
from dockyard.storage.base import StorageError
from tests.lifecycle_support import put_blob, stored_blobs

DELAY = 60


class FailsOneKey:
    """A driver wrapper whose delete_many fails one key (while ``failing``), the rest go through."""

    def __init__(self, inner, bad_key):
        self.inner, self.bad_key, self.failing = inner, bad_key, True
        self.calls: list[list[str]] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def delete(self, key):
        raise AssertionError("blob tombstones go through delete_many")

    def delete_many(self, keys):
        keys = list(keys)
        self.calls.append(keys)
        fail = self.failing and self.bad_key in keys
        out = self.inner.delete_many([k for k in keys if not (fail and k == self.bad_key)])
        if fail:
            out[self.bad_key] = StorageError("injected failure", driver="test", key=self.bad_key)
        return out


def tombstones(reg):
    with reg.db.read() as conn:
        return {r.key: r for r in conn.execute(schema.gc_tombstones.select())}


def test_a_failed_key_is_retried_alone_and_the_others_are_dropped(reg):
    digests = [put_blob(reg, "batch", f"layer {i}".encode()) for i in range(5)]
    bad = digests[2]
    reg.clock.advance(DELAY + 1)
    store = FailsOneKey(reg.storage, paths.blob_key(bad))
    opts = Collector.for_registry(reg, workers=1).opts  # one worker: one batch of all five
    report = Collector(reg.db, store, reg.clock, opts).run()
    assert [sorted(c) for c in store.calls] == [sorted(paths.blob_key(d) for d in digests)]
    assert report.kinds["blobs"].objects == 4 and report.kinds["blobs"].failures == 1
    assert stored_blobs(reg) & set(digests) == {bad}
    left = tombstones(reg)
    assert list(left) == [paths.blob_key(bad)]
    assert left[paths.blob_key(bad)].attempts == 1 and "injected failure" in left[paths.blob_key(bad)].last_error

    store.calls.clear()
    assert Collector(reg.db, store, reg.clock, opts).run().kinds["blobs"].objects == 0  # backoff: not due yet
    assert store.calls == []
    reg.clock.advance(opts.retry_base + 1)
    store.failing = False
    report = Collector(reg.db, store, reg.clock, opts).run()
    assert store.calls == [[paths.blob_key(bad)]]  # only the failed key is tried again
    assert report.kinds["blobs"].objects == 1 and report.kinds["tombstones"].objects == 1
    assert not stored_blobs(reg) & set(digests) and tombstones(reg) == {}


def test_a_batch_that_fails_as_a_whole_keeps_every_tombstone(reg):
    digests = [put_blob(reg, "down", f"blob {i}".encode()) for i in range(3)]
    reg.clock.advance(DELAY + 1)

    class Down(FailsOneKey):
        def delete_many(self, keys):
            self.calls.append(list(keys))
            if self.failing:
                raise StorageError("connection reset", driver="test")
            return self.inner.delete_many(keys)

    store = Down(reg.storage, None)
    opts = Collector.for_registry(reg).opts
    report = Collector(reg.db, store, reg.clock, opts).run()
    assert report.kinds["blobs"].objects == 0 and report.kinds["blobs"].failures == 3
    assert set(tombstones(reg)) == {paths.blob_key(d) for d in digests}
    assert stored_blobs(reg) >= set(digests)
    reg.clock.advance(opts.retry_base + 1)
    store.failing = False
    assert Collector(reg.db, store, reg.clock, opts).run().kinds["blobs"].objects == 3
    assert not stored_blobs(reg) & set(digests) and tombstones(reg) == {}


def _link_batches(monkeypatch) -> list[tuple[int, int]]:
    """(limit, taken) of every link-review batch the collector takes from now on."""
    from dockyard.meta.reviews import ReviewQueues

    seen: list[tuple[int, int]] = []
    take_due = ReviewQueues.take_due

    def recording(self, name, now, limit):
        rows = take_due(self, name, now, limit)
        if name == "links" and rows:
            seen.append((limit, len(rows)))
        return rows

    monkeypatch.setattr(ReviewQueues, "take_due", recording)
    return seen


def test_a_run_with_a_backlog_grows_its_batches_up_to_batch_max(reg, monkeypatch):
    digests = [put_blob(reg, "backlog", f"layer {i}".encode()) for i in range(40)]
    reg.clock.advance(DELAY + 1)
    seen = _link_batches(monkeypatch)
    report = Collector.for_registry(reg, batch_size=4, batch_max=16, batch_seconds=60.0).run()
    assert seen == [(4, 4), (8, 8), (16, 16), (16, 12)]  # doubled after each full, short batch
    assert report.kinds["links"].objects == 40 and report.kinds["blobs"].objects == 40
    assert not stored_blobs(reg) & set(digests)


def test_batches_that_hold_the_writer_too_long_stay_at_batch_size(reg, monkeypatch):
    digests = [put_blob(reg, "slow", f"layer {i}".encode()) for i in range(12)]
    reg.clock.advance(DELAY + 1)
    seen = _link_batches(monkeypatch)
    # every transaction takes longer than this bound: no batch grows past batch_size
    report = Collector.for_registry(reg, batch_size=4, batch_max=16, batch_seconds=1e-9).run()
    assert seen == [(4, 4)] * 3
    assert report.kinds["blobs"].objects == 12 and not stored_blobs(reg) & set(digests)
