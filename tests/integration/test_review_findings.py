"""Findings of a review of the upload sessions and the collector, each reproduced (SQLite, S3
on moto; PostgreSQL for the deadlock): a writer that lost its claim cutting another writer's
acknowledged bytes, a rate-limited delete outliving its tombstone's lease, sessions that left
their repository unreviewed, a blob commit deadlocking with the collector's link review."""
from __future__ import annotations

import threading

import pytest

from dockyard import faults
from dockyard.errors import RegistryError
from dockyard.registry import uploads
from dockyard.storage import paths
from tests.lifecycle_support import make_registry
from tests.support import sha256


# read by the shared ``reg`` fixture (tests/conftest.py)
BACKENDS = ["sqlite", "s3"]


def staged(reg, upload):
    key = paths.upload_key(upload.id)
    return b"".join(reg.storage.read(key)) if reg.storage.stat(key) is not None else None


def test_stale_writer_cut_back_loses_acknowledged_bytes(reg):
    up = uploads.start(reg, "app")
    go = threading.Event()
    inside = threading.Event()

    def stalled_body():
        yield b"stalled"
        inside.set()
        go.wait(30)
        raise RuntimeError("client connection dropped")  # e.g. the server's read timeout

    errs = []
    def first():
        try:
            uploads.write(reg, up, stalled_body())
        except BaseException as exc:
            errs.append(exc)

    t = threading.Thread(target=first)
    t.start()
    assert inside.wait(30)
    reg.clock.advance(uploads.CLAIM_LEASE + 1)
    data = b"acknowledged by the second writer"
    second = uploads.write(reg, up, [data])  # 202 to the client
    assert uploads.get(reg, "app", up.id).size == len(data)
    go.set()
    t.join(30)
    assert staged(reg, up) == data  # the stale writer did not cut the acknowledged bytes
    blob = uploads.finish(reg, "app", second, sha256(data))
    assert blob.size == len(data)


def test_stale_writer_cut_back_mid_write_commits_wrong_bytes(reg):
    up = uploads.start(reg, "app")
    go = threading.Event()
    inside = threading.Event()

    def stalled_body():
        yield b"x"
        inside.set()
        go.wait(30)
        raise RuntimeError("client connection dropped")

    t = threading.Thread(target=lambda: pytest.raises(BaseException, uploads.write, reg, up, stalled_body()))
    t.start()
    assert inside.wait(30)
    reg.clock.advance(uploads.CLAIM_LEASE + 1)
    part1, part2 = b"A" * 4096, b"B" * 4096

    def second_body():
        yield part1
        go.set()          # the stale writer fails now and cuts back to 0
        t.join(30)
        yield part2

    second = uploads.write(reg, up, second_body())
    blob = uploads.finish(reg, "app", second, sha256(part1 + part2))  # 201
    from dockyard.registry import blobs
    got = b"".join(blobs.read(reg, blobs.stat(reg, "app", blob.digest)))
    assert got == part1 + part2


def test_failed_push_leaves_unreviewed_repository(reg):
    from dockyard.lifecycle.collector import Collector
    from dockyard.lifecycle.fsck import Fsck
    with pytest.raises(RegistryError):
        uploads.push_whole(reg, "fresh", sha256(b"other"), [b"data"])
    up = uploads.start(reg, "fresh2")
    uploads.cancel(reg, "fresh2", up.id)
    reg.clock.advance(10 * 86400)
    Collector.for_registry(reg).run()
    report = Fsck(reg.db, reg.storage, reg.clock, 0, requeue=False).run()
    assert not report.unreviewed_items


def test_rate_limited_delete_outlives_its_lease_and_deletes_a_fresh_push(reg):
    from dockyard.lifecycle.collector import Collector
    from dockyard.lifecycle.deletes import unlink_blob
    from dockyard.report import Report
    from dockyard.registry import blobs
    from tests.lifecycle_support import put_blob
    datas = [f"blob {i}".encode() for i in range(4)]
    digests = [put_blob(reg, "app", d) for d in datas]
    for d in digests:
        unlink_blob(reg, "app", d)
    reg.clock.advance(reg.config.gc_delay + 1)
    c = Collector.for_registry(reg, max_deletes_per_second=1, workers=1)
    report = Report("gc")
    c.step(report)  # reviews, tombstones, claims them and starts deleting: 1 key per second
    assert c._inflight is not None
    reg.clock.advance(c.opts.lease + 1)  # the deletes are still queued behind the limiter
    for d in datas:
        uploads.push_whole(reg, "app", sha256(d), [d])  # 201 each: tombstone 'idle', cancelled
    c._settle_inflight(report)
    c._pool.close()
    lost = []
    for d, dg in zip(datas, digests):
        b = blobs.stat(reg, "app", dg)  # the row says it is there
        try:
            got = b"".join(blobs.read(reg, b))
        except RegistryError:
            got = None
        if got != d:
            lost.append(dg)
    assert not lost


@pytest.fixture
def pgreg(tmp_path):
    with make_registry(tmp_path, "postgres") as r:
        yield r


def test_a_commit_racing_the_collectors_link_review_completes_or_can_be_retried(pgreg):
    """The collector holds a layer's link-review row (claimed) while a re-push of that layer
    commits: they took their locks in opposite orders and deadlocked, and the push kept its
    session claim, so the client's retried PUT got 409 until the lease ran out."""
    from dockyard.lifecycle.collector import Collector
    from dockyard.registry import blobs
    from tests.lifecycle_support import put_blob

    reg = pgreg
    data = b"layer"
    put_blob(reg, "app", data)
    reg.clock.advance(reg.config.gc_delay + 1)  # the link's review is due
    up = uploads.write(reg, uploads.start(reg, "app"), [data])  # re-push of the same layer
    res = []

    def push():
        try:
            res.append(uploads.finish(reg, "app", up, sha256(data)))
        except RegistryError as exc:
            res.append(exc)

    with faults.hold("collector.links_claimed") as h:
        gc = threading.Thread(target=Collector.for_registry(reg).run)
        gc.start()
        assert h.reached.wait(30)
        p = threading.Thread(target=push)
        p.start()
        p.join(0.5)
        h.release()
        p.join(30)
        gc.join(30)
    if isinstance(res[0], RegistryError):  # a clean refusal: the client's retry must go through
        res[0] = uploads.finish(reg, "app", uploads.get(reg, "app", up.id), sha256(data))
    assert res[0].size == len(data)
    assert b"".join(blobs.read(reg, blobs.stat(reg, "app", sha256(data)))) == data
