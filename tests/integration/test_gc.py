"""The reclamation pipeline, in process, on SQLite and PostgreSQL, with a fake clock."""

import pytest

from dockyard.lifecycle import deletes
from dockyard.errors import RegistryError
from dockyard.lifecycle.collector import Collector
from dockyard.lifecycle.fsck import Fsck
from dockyard.lifecycle.purge import purge_manifests
from dockyard.meta.manifests import PurgeTarget
from dockyard.meta.stores import Stores
from dockyard.meta.manifests import ManifestStore
from dockyard.meta.repositories import RepositoryStore
from dockyard.registry import blobs, discovery, manifests, uploads
from dockyard.storage import paths
from tests.lifecycle_support import make_registry, put_blob, put_image, put_index, stored_blobs
from tests.support import make_layer, sha256

DELAY = 60


def gc(reg, **overrides):
    return Collector.for_registry(reg, **overrides).run()


def purge(reg, name, digest):
    """What the scrubber does to a pending_delete image once its scrub time has passed."""
    opts = Collector.for_registry(reg).opts.purge
    with reg.db.write() as conn:
        repo = RepositoryStore(conn).get(name, include_deleted=True)
        m = ManifestStore(conn).get(repo.id, digest, any_state=True)
        purge_manifests(conn, [PurgeTarget(m.id, repo.id, digest)], reg.now(), opts)


def test_fresh_uploads_are_protected_then_unreferenced_blobs_go(reg):
    d = put_blob(reg, "a/b", b"orphan layer")
    assert gc(reg).total_objects == 0  # within gc_delay: protected
    assert d in stored_blobs(reg)
    reg.clock.advance(DELAY + 1)
    report = gc(reg)
    assert report.kinds["links"].objects == 1
    assert report.kinds["blobs"].objects == 1 and report.kinds["blobs"].bytes == len(b"orphan layer")
    assert report.kinds["repositories"].objects == 1
    assert d not in stored_blobs(reg)
    with pytest.raises(RegistryError):
        blobs.stat(reg, "a/b", d)
    assert discovery.catalog(reg, None, None) == []


def test_referenced_blobs_stay_and_shared_blobs_survive_a_purge(reg):
    shared = make_layer("shared")
    d1, b1 = put_image(reg, "app", "v1", "one", shared=[shared])
    d2, b2 = put_image(reg, "app", "v2", "two", shared=[shared])
    reg.clock.advance(DELAY + 1)
    report = gc(reg)  # only the staged copy of the second push of the shared layer goes
    assert report.total_objects == report.kinds["uploads"].objects == 1
    deletes.delete_manifest(reg, "app", d1)
    purge(reg, "app", d1)
    reg.clock.advance(DELAY + 1)
    report = gc(reg)
    gone = {sha256(b) for b in b1} - {sha256(b) for b in b2}
    assert report.kinds["blobs"].objects == len(gone) == 2
    assert stored_blobs(reg) == {sha256(b) for b in b2}
    assert manifests.get(reg, "app", "v2").digest == d2


def test_pending_delete_images_keep_their_blobs(reg):
    d, bl = put_image(reg, "keep", "v1", "k")
    deletes.delete_manifest(reg, "keep", d)
    reg.clock.advance(DELAY * 10)
    gc(reg)
    assert {sha256(b) for b in bl} <= stored_blobs(reg)


def test_unlinked_blob_used_by_another_repository_stays(reg):
    data = b"shared between repos"
    d = put_blob(reg, "r1", data)
    put_image(reg, "r2", "v1", "r2", shared=[data])  # r2 has a manifest that needs it
    deletes.unlink_blob(reg, "r1", d)
    reg.clock.advance(DELAY + 1)
    report = gc(reg)
    assert report.kinds["blobs"].objects == 0
    assert blobs.stat(reg, "r2", d).digest == d


@pytest.mark.parametrize("reg", [{"delete_untagged": True}], indirect=True)
def test_delete_untagged_spares_children_and_live_referrers(reg):
    old, _ = put_image(reg, "u", "latest", "old")
    amd, _ = put_image(reg, "u", None, "amd")
    idx = put_index(reg, "u", "multi", [amd])
    subject = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": idx, "size": 10}
    sig, _ = put_image(reg, "u", None, "sig", subject=subject)
    new, _ = put_image(reg, "u", "latest", "new")  # moves the tag: old is untagged now
    reg.clock.advance(DELAY + 1)
    report = gc(reg)
    assert report.kinds["manifests"].objects == 1
    with pytest.raises(RegistryError):
        manifests.get(reg, "u", old)
    for d in (amd, idx, sig, new):
        assert manifests.get(reg, "u", d).digest == d
    # the index goes: its child and its referrer follow
    deletes.delete_manifest(reg, "u", idx)
    purge(reg, "u", idx)
    reg.clock.advance(DELAY + 1)
    report = gc(reg)
    assert report.kinds["manifests"].objects == 2
    for d in (amd, sig):
        with pytest.raises(RegistryError):
            manifests.get(reg, "u", d)


def test_untagged_manifests_stay_by_default(reg):
    d, _ = put_image(reg, "u2", "latest", "a")
    put_image(reg, "u2", "latest", "b")
    reg.clock.advance(DELAY + 1)
    gc(reg)
    assert manifests.get(reg, "u2", d).digest == d


def test_stale_uploads_are_reclaimed(reg):
    up = uploads.start(reg, "up")
    uploads.write(reg, up, [b"abandoned bytes"])
    key = paths.upload_key(up.id)
    assert reg.storage.stat(key) is not None
    reg.clock.advance(reg.config.upload_ttl / 2)
    assert gc(reg).kinds["uploads"].objects == 0
    reg.clock.advance(reg.config.upload_ttl)
    report = gc(reg)
    assert report.kinds["uploads"].objects == 1 and report.kinds["uploads"].bytes == len(b"abandoned bytes")
    assert reg.storage.stat(key) is None
    with pytest.raises(RegistryError):
        uploads.get(reg, "up", up.id)


def test_dry_run_reports_what_a_run_then_does(reg):
    put_blob(reg, "dry", b"one")
    put_blob(reg, "dry", b"two")
    reg.clock.advance(DELAY + 1)
    before = stored_blobs(reg)
    preview = gc(reg, dry_run=True)
    assert stored_blobs(reg) == before
    assert {i["digest"] for i in preview.items if i["kind"] == "blobs"} == {sha256(b"one"), sha256(b"two")}
    real = gc(reg)
    for kind in ("links", "blobs"):
        assert preview.kinds[kind].objects == real.kinds[kind].objects
        assert preview.kinds[kind].bytes == real.kinds[kind].bytes


class FlakyDeletes:
    """A driver wrapper whose deletes fail a number of times first."""

    def __init__(self, inner, failures):
        self.inner, self.failures, self.calls = inner, failures, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def delete(self, key):
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise OSError("injected failure")
        self.inner.delete(key)


def test_failed_deletes_are_retried_with_backoff(reg):
    d = put_blob(reg, "flaky", b"stubborn")
    other = put_blob(reg, "flaky", b"easy")
    reg.clock.advance(DELAY + 1)
    flaky = FlakyDeletes(reg.storage, failures=1)
    c = Collector(reg.db, flaky, reg.clock, Collector.for_registry(reg).opts)
    report = c.run()
    assert report.kinds["blobs"].failures == 1 and report.kinds["blobs"].objects == 1
    assert stored_blobs(reg) & {d, other} and len(stored_blobs(reg) & {d, other}) == 1
    assert c.run().kinds["blobs"].objects == 0  # backoff: not due yet
    reg.clock.advance(c.opts.retry_base + 1)
    report = Collector(reg.db, flaky, reg.clock, c.opts).run()
    assert report.kinds["blobs"].objects == 1 and report.kinds["tombstones"].objects == 1
    assert not stored_blobs(reg) & {d, other}


def test_tombstones_left_by_a_crash_are_finished(reg):
    d = put_blob(reg, "crash", b"half done")
    reg.clock.advance(DELAY + 1)
    _collect_rows_only(reg)  # row gone, tombstone written; "crash" before deleting data
    assert d in stored_blobs(reg)
    with reg.db.read() as conn:
        assert Stores(conn).tombstones.exists_for(d)
    assert gc(reg).kinds["blobs"].objects == 1
    assert d not in stored_blobs(reg)


def _dead_pid() -> int:
    """The process id of a process that has exited (and been reaped)."""
    import subprocess
    import sys
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _collect_rows_only(reg):
    """Run the review queues but not the storage deletes: rows gone, tombstones written, and
    the collector dies. Its tombstones were written leased to it; a collector started on the
    same host releases the leases of one that no longer runs (as here), others wait for them
    to run out: either way they are then idle, as the tombstones of a collector that died
    before claiming them."""
    import socket

    from dockyard.lifecycle.collector import _process_alive
    from dockyard.report import Report
    c = Collector.for_registry(reg)
    c.owner = f"{socket.gethostname()}:{_dead_pid()}"
    r = Report("gc")
    c._queue("links", c._review_links, r, reg.now())
    c._queue("blobs", c._review_blobs, r, reg.now())
    with reg.db.write() as conn:
        Stores(conn).tombstones.release_leases_of_dead(socket.gethostname(), _process_alive, reg.now())


def test_push_cancels_a_waiting_tombstone_and_keeps_the_data(reg):
    data = b"wanted again"
    d = put_blob(reg, "race", data)
    reg.clock.advance(DELAY + 1)
    _collect_rows_only(reg)
    with reg.db.read() as conn:
        assert Stores(conn).tombstones.exists_for(d)
    up = uploads.write(reg, uploads.start(reg, "race"), [data])
    assert uploads.finish(reg, "race", up, d).digest == d  # no wait: nobody was deleting it
    with reg.db.read() as conn:
        assert not Stores(conn).tombstones.exists_for(d)
    gc(reg)
    assert b"".join(blobs.read(reg, blobs.stat(reg, "race", d))) == data


def test_push_waits_while_a_collector_deletes_then_writes_the_data_again(reg):
    import threading

    data = b"resurrected"
    d = put_blob(reg, "race", data)
    reg.clock.advance(DELAY + 1)
    _collect_rows_only(reg)
    with reg.db.write() as conn:  # a collector claims the tombstone: its delete is in flight
        claimed = Stores(conn).tombstones.claim(reg.now(), 10, "other-collector", 120)
    assert [t.digest for t in claimed] == [d]
    up = uploads.write(reg, uploads.start(reg, "race"), [data])
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("blob", uploads.finish(reg, "race", up, d)))
    t.start()
    t.join(0.5)
    assert t.is_alive(), "the push must wait while the digest's data is being deleted"
    reg.storage.delete(claimed[0].key)
    with reg.db.write() as conn:
        Stores(conn).tombstones.drop([claimed[0].key])
    t.join(10)
    assert result["blob"].digest == d
    assert b"".join(blobs.read(reg, blobs.stat(reg, "race", d))) == data


def test_push_takes_over_a_tombstone_whose_lease_expired(reg):
    data = b"dead collector"
    d = put_blob(reg, "race", data)
    reg.clock.advance(DELAY + 1)
    _collect_rows_only(reg)
    with reg.db.write() as conn:
        Stores(conn).tombstones.claim(reg.now(), 10, "killed-collector", 120)
    reg.clock.advance(121)  # the collector died; its lease ran out
    up = uploads.write(reg, uploads.start(reg, "race"), [data])
    assert uploads.finish(reg, "race", up, d).digest == d
    assert b"".join(blobs.read(reg, blobs.stat(reg, "race", d))) == data


def test_head_postpones_a_due_link_review(reg):
    d = put_blob(reg, "head", b"relied upon")
    reg.clock.advance(DELAY - 1)
    blobs.stat(reg, "head", d)  # a client checks the layer just before the review is due
    reg.clock.advance(2)
    assert gc(reg).kinds["links"].objects == 0
    reg.clock.advance(DELAY + 1)
    assert gc(reg).kinds["links"].objects == 1


def test_fsck_finds_leaks_and_missing_data(reg):
    d = put_blob(reg, "fsck", b"indexed")
    leak = b"leaked by a crash"
    reg.storage.write_at("uploads/" + "f" * 32, 0, [leak])
    reg.storage.write_at("uploads/" + "e" * 32, 0, [b"tmp"])
    reg.storage.move("uploads/" + "e" * 32, paths.blob_key(sha256(b"tmp")))
    import time
    reg.clock.t = time.time() + reg.config.fsck_grace + 10
    report = Fsck(reg.db, reg.storage, reg.clock, reg.config.fsck_grace).run()
    assert report.leaks == 2 and report.deleted == 0 and not report.missing
    report = Fsck(reg.db, reg.storage, reg.clock, reg.config.fsck_grace, delete=True).run()
    assert report.deleted == 2  # handed to the collector: tombstones, nothing deleted by fsck
    assert reg.storage.stat("uploads/" + "f" * 32) is not None
    assert Fsck(reg.db, reg.storage, reg.clock, reg.config.fsck_grace).run().leaks == 0
    reg.storage.delete(paths.blob_key(d))
    report = Fsck(reg.db, reg.storage, reg.clock, reg.config.fsck_grace, verify=True).run()
    assert report.missing == [d]
    reg.storage.write_at("uploads/" + "c" * 32, 0, [b"not the content"])
    reg.storage.move("uploads/" + "c" * 32, paths.blob_key(d))
    report = Fsck(reg.db, reg.storage, reg.clock, reg.config.fsck_grace, verify=True).run()
    assert report.corrupt == [d] and not report.missing


def test_fsck_reports_a_blob_whose_stored_size_differs_from_its_row(reg):
    d = put_blob(reg, "fsck", b"0123456789")
    reg.storage.write_at("uploads/" + "d" * 32, 0, [b"0123456789" * 4])  # 40 bytes where 10 are recorded
    reg.storage.move("uploads/" + "d" * 32, paths.blob_key(d))
    assert Fsck(reg.db, reg.storage, reg.clock, reg.config.fsck_grace).run().corrupt == [d]  # even without verify


def test_fsck_hands_leaks_to_the_collector_which_deletes_them(reg):
    reg.storage.write_at("uploads/" + "f" * 32, 0, [b"leaked staging"])
    reg.storage.write_at("uploads/" + "e" * 32, 0, [b"leaked blob"])
    reg.storage.move("uploads/" + "e" * 32, paths.blob_key(sha256(b"leaked blob")))
    import time
    reg.clock.t = time.time() + reg.config.fsck_grace + 10
    assert Fsck(reg.db, reg.storage, reg.clock, reg.config.fsck_grace, delete=True).run().deleted == 2
    report = gc(reg)
    assert report.kinds["blobs"].objects == 1 and report.kinds["uploads"].objects == 1
    assert reg.storage.stat("uploads/" + "f" * 32) is None and stored_blobs(reg) == set()


def test_gc_cli_says_what_waits_for_its_grace_and_when_it_is_due(tmp_path, capsys):
    """An honest report: not a table of zeros while layer links wait for gc_delay."""
    import json
    import time

    from dockyard.cli import main

    with make_registry(tmp_path, "sqlite") as reg:
        reg.clock.t = time.time()
        put_blob(reg, "app", b"fresh layer")  # its link is reviewed after gc_delay (60 s here)
    assert main(["gc", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 links still in their grace period" in out and "the first is due in" in out
    assert main(["gc", "--data-dir", str(tmp_path), "--output", "json"]) == 0
    waiting = json.loads(capsys.readouterr().out)["waiting"]
    assert waiting["links"]["entries"] == 1 and 0 < waiting["links"]["first_due_in_seconds"] <= 60


def test_run_history_lists_runs_in_the_order_they_finished(reg):
    """A long run that started before a short one but finished after it is the newest entry:
    a poller of the last N runs must not miss it behind runs that started later."""
    from dockyard.lifecycle import scheduler
    with reg.db.write() as conn:
        runs = Stores(conn).runs
        runs.record("gc", started=100.0, finished=101.0, dry_run=False, host="a", report={"n": "short"})
        runs.record("gc", started=50.0, finished=102.0, dry_run=False, host="b", report={"n": "long"})
    status = scheduler.gc_status(reg, 1)
    assert [r["report"]["n"] for r in status["runs"]] == ["long"]
    assert [r["report"]["n"] for r in scheduler.gc_status(reg, 500)["runs"]] == ["long", "short"]
