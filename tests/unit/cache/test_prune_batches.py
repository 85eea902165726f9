"""Prune over many pages of the index: victims chosen a page at a time, files deleted by threads
while the next page is marked, rows deleted a few pages at a time; a prune that dies midway."""

from __future__ import annotations

import os

import pytest

from dockyard.cache import evict, maintenance
from dockyard.meta.cacheindex import EVICTING, READY
from tests.unit.cache.test_blobcache import Store, disk_bytes, make, read


@pytest.fixture
def small_pages(monkeypatch):
    monkeypatch.setattr(maintenance, "PAGE", 7)
    monkeypatch.setattr(maintenance, "FORGET", 10)
    monkeypatch.setattr(evict, "SLICE", 2)  # the thread pool even for a handful of files


def filled(tmp_path, n=60, size=100):
    store = Store()
    cache = make(tmp_path, store, max_size=n * size, high=0.9, low=0.5)
    digests = [store.add(os.urandom(size)) for _ in range(n)]
    for d in digests:
        read(cache, d, size)
    return cache, digests


def test_lru_page_is_lru_in_pages(tmp_path):
    cache, digests = filled(tmp_path, n=20)
    streamed = list(cache.index.lru(cache.index.read()))
    paged, after = [], None
    while page := cache.index.lru_page(after, 6):
        paged += page
        after = (page[-1].last_used, page[-1].key)
    assert paged == streamed and [e.key for e in paged] == digests


def test_prune_in_pages_keeps_pinned_and_read_entries(tmp_path, small_pages):
    cache, digests = filled(tmp_path)
    pinned, reading = digests[2], digests[5]
    cache.index.set_pinned(pinned, True)
    reader = cache.read(reading, 100)
    report = maintenance.prune(cache)
    reader.close()
    assert report.size_after <= cache.low == 3000
    assert (report.total_files_pruned, report.total_bytes_pruned) == (30, 3000)
    left = {e.digest for e in cache.index.page(limit=1000)}
    # the oldest 32 minus the two that must stay were evicted, in LRU order
    assert left == {pinned, reading, *digests[32:]}
    assert all(e.state == READY for e in cache.index.page(limit=1000))
    assert disk_bytes(cache) == cache.index.totals()[1] == 3000
    assert {p.name for p in (cache.blobs_dir / "sha256").iterdir()} == {d.partition(":")[2] for d in left}


def test_a_prune_that_dies_midway_leaves_nothing_served_that_is_gone(tmp_path, small_pages, monkeypatch):
    cache, _ = filled(tmp_path)
    calls = []

    def dying_forget(chosen, reason, *, gauges=True):
        calls.append(len(chosen))
        raise KeyboardInterrupt("killed")  # the process dies before the rows go

    monkeypatch.setattr(cache, "forget", dying_forget)
    with pytest.raises(KeyboardInterrupt):
        maintenance.prune(cache)
    evicting = [e for e in cache.index.page(limit=1000) if e.state == EVICTING]
    assert calls and evicting
    for e in evicting:  # marked: never served, the read goes to the backend
        assert not os.path.exists(cache.file(e.digest))
        hits = cache.counts()["hits"]
        assert len(read(cache, e.digest, 100)) == 100 and cache.counts()["hits"] == hits
    monkeypatch.undo()
    report = maintenance.clean(cache, 3600)
    assert report.invalid == len(evicting)
    assert disk_bytes(cache) == cache.index.totals()[1]
    assert all(e.state == READY for e in cache.index.page(limit=1000))
