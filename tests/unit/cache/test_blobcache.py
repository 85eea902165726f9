"""The blob cache on its own: a real cache directory and index, a backend that is a dict of bytes."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from dockyard.cache import maintenance
from dockyard.cache.blobcache import BlobCache
from dockyard.errors import Conflict, RegistryError
from dockyard.meta.cacheindex import FILLING, READY


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Store:
    """The backend: blob bytes by digest; counts calls; can lie about content."""

    def __init__(self):
        self.blobs: dict[str, bytes] = {}
        self.calls = 0
        self.lie: set[str] = set()

    def add(self, data: bytes) -> str:
        d = digest_of(data)
        self.blobs[d] = data
        return d

    def __call__(self, digest, offset, length):
        self.calls += 1
        data = self.blobs[digest]
        if digest in self.lie:
            data = b"X" * len(data)
        data = data[offset: None if length is None else offset + length]
        return iter([data[i:i + 1000] for i in range(0, len(data), 1000)] or [b""])


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        self.t += 1
        return self.t


@pytest.fixture
def store():
    return Store()


def make(tmp_path, store, max_size=10_000, high=0.9, low=0.5):
    return BlobCache(tmp_path / "cache", store, max_size=max_size, high=high, low=low, clock=Clock())


def read(cache, d, size, offset=0, length=None) -> bytes:
    return b"".join(cache.read(d, size, offset, length))


def _files(cache) -> frozenset:
    out = set()
    for sub in (cache.blobs_dir, cache.tmp_dir):
        for root, _, files in os.walk(sub):
            for name in files:
                try:
                    out.add((name, os.stat(os.path.join(root, name)).st_size))
                except FileNotFoundError:  # renamed or evicted meanwhile
                    pass
    return frozenset(out)


def disk_bytes(cache) -> int:
    """Bytes of the cache's files (blob files and incomplete ones) right now."""
    return sum(size for _, size in _files(cache))


def consistent_disk_bytes(cache) -> int | None:
    """Bytes on disk from two walks in a row that saw the same files and sizes (a walk is not
    atomic: a file evicted after it was counted and its room refilled before the walk ends would
    count twice); None when the files changed in between."""
    first = _files(cache)
    return sum(size for _, size in first) if _files(cache) == first else None


def test_miss_fills_then_hits_serve_from_disk_with_ranges(tmp_path, store):
    cache = make(tmp_path, store)
    data = os.urandom(3000)
    d = store.add(data)
    assert read(cache, d, 3000) == data
    assert store.calls == 1 and cache.index.get(d).state == READY
    assert cache.path(d).read_bytes() == data
    assert read(cache, d, 3000) == data
    assert read(cache, d, 3000, 100, 50) == data[100:150]
    assert store.calls == 1  # both from the cache
    assert cache.metrics.get("dockyard_cache_hits_total") == 2
    assert cache.metrics.get("dockyard_cache_served_bytes_total", source="cache") == 3050
    assert cache.index.get(d).hits == 2


def test_range_miss_passes_through_and_queues(tmp_path, store):
    cache = make(tmp_path, store)
    seen = []
    cache.on_range_miss = seen.append
    d = store.add(os.urandom(3000))
    assert read(cache, d, 3000, 10, 20) == store.blobs[d][10:30]
    assert cache.index.get(d) is None and seen == [d]


def test_bytes_that_fail_verification_are_never_cached(tmp_path, store):
    cache = make(tmp_path, store)
    d = store.add(os.urandom(2000))
    store.lie.add(d)
    read(cache, d, 2000)
    assert cache.index.get(d) is None and disk_bytes(cache) == 0
    assert cache.metrics.get("dockyard_cache_verify_failures_total") == 1


def test_client_that_leaves_early_leaves_nothing_visible(tmp_path, store):
    cache = make(tmp_path, store)
    d = store.add(os.urandom(5000))
    it = cache.read(d, 5000)
    next(it)
    it.close()
    assert cache.index.get(d) is None and disk_bytes(cache) == 0


def test_lru_eviction_skips_pinned_and_in_use(tmp_path, store):
    cache = make(tmp_path, store, max_size=10_000)
    blobs = [store.add(os.urandom(3000)) for _ in range(4)]
    for d in blobs[:3]:
        read(cache, d, 3000)
    cache.index.set_pinned(blobs[0], True)
    reader = cache.read(blobs[1], 3000)  # in use while the fourth fills
    next(reader)
    read(cache, blobs[3], 3000)
    assert cache.index.get(blobs[2]) is None  # the only evictable one
    assert {cache.index.get(d).state for d in (blobs[0], blobs[1], blobs[3])} == {READY}
    reader.close()
    assert cache.metrics.get("dockyard_cache_evictions_total", reason="fill") == 1


def test_no_room_serves_without_caching(tmp_path, store):
    cache = make(tmp_path, store, max_size=5000)
    a, b = store.add(os.urandom(3000)), store.add(os.urandom(3000))
    read(cache, a, 3000)
    cache.index.set_pinned(a, True)
    assert read(cache, b, 3000) == store.blobs[b]
    assert cache.index.get(b) is None
    assert cache.metrics.get("dockyard_cache_uncached_total", reason="full") == 1


def test_concurrent_fills_never_exceed_max(tmp_path, store):
    cache = make(tmp_path, store, max_size=20_000)
    blobs = [store.add(os.urandom(3000 + i)) for i in range(40)]
    peak = [0]
    stop = threading.Event()

    samples = []

    def sample():
        while not stop.is_set():
            size = consistent_disk_bytes(cache)
            if size is not None:
                samples.append(size)
                peak[0] = max(peak[0], size)

    def pull(i):
        for k in range(20):
            d = blobs[(i * 7 + k) % len(blobs)]
            assert read(cache, d, len(store.blobs[d])) == store.blobs[d]

    sampler = threading.Thread(target=sample)
    sampler.start()
    threads = [threading.Thread(target=pull, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    stop.set()
    sampler.join()
    assert len(samples) > 10 and 0 < peak[0] <= 20_000
    assert cache.index.totals()[1] <= 20_000


def test_clean_removes_stalled_unknown_missing_and_invalid(tmp_path, store):
    cache = make(tmp_path, store)
    good, gone, bad = (store.add(os.urandom(1000)) for _ in range(3))
    for d in (good, gone, bad):
        read(cache, d, 1000)
    cache.path(gone).unlink()
    cache.path(bad).write_bytes(b"short")
    dead_pid = 2 ** 22 + 12345  # no such process
    stalled = digest_of(b"never finished")
    cache.index.reserve(stalled, 500, dead_pid, 1.0, cache.max_size, cache.low, lambda *a: iter(()))
    (cache.tmp_dir / f"{stalled.split(':')[1]}.{dead_pid}.0").write_bytes(b"x" * 200)
    (cache.blobs_dir / "sha256" / ("ab" * 32)).write_bytes(b"y" * 300)
    dry = maintenance.clean(cache, 3600, dry_run=True)
    assert (dry.incomplete, dry.unknown_files, dry.missing_files, dry.invalid) == (1, 1, 1, 1)
    assert cache.index.get(stalled) is not None  # a dry run changes nothing
    report = maintenance.clean(cache, 3600)
    assert report.total_files_cleaned == 3 and report.total_bytes_cleaned == 200 + 300 + 5
    assert [e.digest for e in cache.index.page()] == [good]
    assert maintenance.clean(cache, 3600).total_files_cleaned == 0


def test_prune_to_low_watermark_in_lru_order(tmp_path, store):
    cache = make(tmp_path, store, max_size=10_000, high=0.9, low=0.5)
    blobs = [store.add(os.urandom(1000)) for _ in range(9)]
    for d in blobs:
        read(cache, d, 1000)
    read(cache, blobs[0], 1000)  # the oldest becomes the most recent
    assert maintenance.prune(cache, only_above_high=True).total_files_pruned == 0  # 9,000 is not above 9,000
    dry = maintenance.prune(cache, dry_run=True)
    assert dry.total_files_pruned == 4 and cache.index.totals() == (9, 9000)
    report = maintenance.prune(cache)
    assert (report.total_files_pruned, report.total_bytes_pruned, report.size_after) == (4, 4000, 5000)
    assert {e.digest for e in cache.index.page()} == {blobs[0], *blobs[5:]}


def test_delete_and_clear(tmp_path, store):
    cache = make(tmp_path, store)
    a, b = store.add(os.urandom(1000)), store.add(os.urandom(1000))
    read(cache, a, 1000)
    read(cache, b, 1000)
    with pytest.raises(RegistryError):
        maintenance.delete(cache, digest_of(b"absent"))
    reader = cache.read(a, 1000)
    with pytest.raises(Conflict):
        maintenance.delete(cache, a)
    assert maintenance.clear(cache)["skipped_in_use"] == 1
    reader.close()
    assert maintenance.delete(cache, a)["total_bytes_deleted"] == 1000
    assert cache.index.totals() == (0, 0) and disk_bytes(cache) == 0


def test_killed_fill_is_invisible(tmp_path, store):
    """A fill whose process died before it marked the entry ready is never served."""
    cache = make(tmp_path, store)
    d = store.add(os.urandom(1000))
    cache.index.reserve(d, 1000, 2 ** 22 + 1, 1.0, cache.max_size, cache.low, lambda *a: iter(()))
    cache.path(d).parent.mkdir(parents=True, exist_ok=True)
    cache.path(d).write_bytes(store.blobs[d])  # renamed, not yet marked ready
    assert read(cache, d, 1000) == store.blobs[d] and store.calls == 1
    assert cache.index.get(d).state == FILLING
    maintenance.clean(cache, 3600)
    assert cache.index.get(d) is None and not cache.path(d).exists()


def test_a_failing_cache_disk_costs_the_cache_not_the_pull(tmp_path, store):
    cache = make(tmp_path, store)
    d = store.add(os.urandom(2000))
    cache.tmp_dir.rmdir()  # the cache's disk fails under it
    assert read(cache, d, 2000) == store.blobs[d]
    assert cache.index.get(d) is None  # the reservation was given back
    assert cache.metrics.get("dockyard_cache_uncached_total", reason="error") == 1


def test_readers_of_one_blob_share_a_lease_and_every_read_counts(tmp_path, store):
    cache = make(tmp_path, store)
    a = store.add(os.urandom(1000))
    read(cache, a, 1000)  # the fill
    first, second = cache.read(a, 1000), cache.read(a, 1000)
    leases = cache.index.read().execute("SELECT COUNT(*) FROM reads").fetchone()[0]
    assert leases == 1 and cache.index.get(a).in_use
    assert cache.index.mark_evicting([a]) == []  # never evicted while read
    first.close()
    assert cache.index.get(a).in_use  # the second reader still holds it
    with pytest.raises(Conflict):
        maintenance.delete(cache, a)
    assert b"".join(second) == store.blobs[a]  # a stream read to its end gives the lease back
    entry = cache.index.get(a)
    assert not entry.in_use and entry.hits == 2 and entry.last_used >= 1003
    assert read(cache, a, 1000, 10, 5) == store.blobs[a][10:15]
    assert cache.index.get(a).hits == 3
    assert maintenance.delete(cache, a)["total_bytes_deleted"] == 1000
