"""Issue 18: every unreferenced object is reclaimed exactly once.

Each test walks one sequence of deletes, restores, collections and scrubs that used to
leave an object with no reference and no pending review (kept forever), or that purged an
object something restorable still needed. In process, on SQLite and PostgreSQL, with a
fake clock.
"""

import hashlib

import pytest
from sqlalchemy import delete, func, select

from dockyard.lifecycle import deletes, trash
from dockyard.errors import Conflict, RegistryError
from dockyard.lifecycle.collector import Collector
from dockyard.lifecycle.purge import purge_manifests
from dockyard.lifecycle.scrubber import Scrubber
from dockyard.meta import schema
from dockyard.meta.manifests import PurgeTarget
from dockyard.meta.manifests import ManifestStore
from dockyard.meta.repositories import RepositoryStore
from dockyard.registry import blobs, manifests
from tests.lifecycle_support import put_blob, put_image, put_index, stored_blobs
from tests.support import sha256

DELAY = 60
SCRUB = 3600


# read by the shared ``reg`` fixture (tests/conftest.py)
REG_SETTINGS = {"scrub_time": SCRUB}


def gc(reg, **overrides):
    return Collector.for_registry(reg, **overrides).run()


def scrub(reg):
    return Scrubber.for_registry(reg).run()


def drain(reg, rounds=4):
    """Let every grace period pass, several times over, scrubbing and collecting each time."""
    for _ in range(rounds):
        reg.clock.advance(max(DELAY, SCRUB) + 1)
        scrub(reg)


def rows(reg) -> dict[str, int]:
    with reg.db.read() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in (schema.blobs, schema.repository_blobs, schema.manifests, schema.repositories)}


EMPTY = {"blobs": 0, "repository_blobs": 0, "manifests": 0, "repositories": 0}


def pull_all(reg, name, digest, content):
    assert manifests.get(reg, name, digest).digest == digest
    for data in content:
        blob = blobs.stat(reg, name, sha256(data))
        assert "sha256:" + hashlib.sha256(b"".join(blobs.read(reg, blob))).hexdigest() == sha256(data)


def manifest_id(reg, name, digest):
    with reg.db.read() as conn:
        repo = RepositoryStore(conn).get(name, include_deleted=True)
        return ManifestStore(conn).get(repo.id, digest, any_state=True).id


# ---- 1. a purge queues reviews for the blobs its manifests referenced -------------------
@pytest.mark.parametrize("blobs_first", [False, True], ids=["manifest-then-blobs", "blobs-then-manifest"])
def test_blobs_unlinked_around_a_manifest_delete_are_reclaimed(reg, blobs_first):
    d, content = put_image(reg, "app", "v1", "one")
    digests = [sha256(c) for c in content]
    if not blobs_first:
        deletes.delete_manifest(reg, "app", d)
    for digest in digests:
        deletes.unlink_blob(reg, "app", digest)
    if blobs_first:
        deletes.delete_manifest(reg, "app", d)
    reg.clock.advance(DELAY + 1)
    assert gc(reg).kinds["blobs"].objects == 0  # the pending image still references them
    drain(reg)
    assert not set(digests) & stored_blobs(reg)
    assert rows(reg) == EMPTY


# ---- 2. an expiring trashed tag queues a review of its manifest ----------------------------
@pytest.mark.parametrize("reg", [{"delete_untagged": True}], indirect=True)
def test_image_kept_only_by_a_trashed_tag_is_collected_when_the_tag_expires(reg):
    d, content = put_image(reg, "app", "v1", "one")
    deletes.delete_manifest(reg, "app", "v1")
    reg.clock.advance(DELAY + 1)
    gc(reg)
    assert manifests.get(reg, "app", d).digest == d  # the tag can still be restored
    drain(reg)
    with pytest.raises(RegistryError):
        manifests.get(reg, "app", d)
    assert not {sha256(c) for c in content} & stored_blobs(reg)
    assert rows(reg) == EMPTY


# ---- 3. a restore queues reviews for what it restored -------------------------------------
@pytest.mark.parametrize("reg", [{"delete_untagged": True}], indirect=True)
def test_image_restored_without_its_tag_is_collected(reg):
    old, content = put_image(reg, "app", "latest", "old")
    deletes.delete_manifest(reg, "app", old)
    new, kept = put_image(reg, "app", "latest", "new")
    result = trash.restore(reg, f"app@{old}")
    assert result.skipped_tags == {"latest": f"now points at {new}"}
    pull_all(reg, "app", old, content)
    reg.clock.advance(DELAY + 1)
    assert gc(reg).kinds["manifests"].objects == 1
    drain(reg)
    with pytest.raises(RegistryError):
        manifests.get(reg, "app", old)
    assert not {sha256(c) for c in content[:1] + content[-1:]} & stored_blobs(reg)
    pull_all(reg, "app", new, kept)


@pytest.mark.parametrize("reg", [{"delete_untagged": True}], indirect=True)
def test_tag_restore_that_finds_the_tag_moved_queues_its_manifest(reg):
    old, _ = put_image(reg, "app", "latest", "old")
    deletes.delete_manifest(reg, "app", "latest")
    new, _ = put_image(reg, "app", "latest", "new")
    reg.clock.advance(DELAY + 1)
    gc(reg)  # the review of old finds its tag in the trash and is used up
    assert manifests.get(reg, "app", old).digest == old
    result = trash.restore(reg, "app:latest")
    assert result.skipped_tags == {"latest": f"now points at {new}"}
    reg.clock.advance(DELAY + 1)
    gc(reg)
    with pytest.raises(RegistryError):
        manifests.get(reg, "app", old)


def test_referrer_restored_after_its_subject_was_purged_is_collected(reg):
    subject, _ = put_image(reg, "app", "v1", "subject")
    ref = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject, "size": 10}
    sig, sig_content = put_image(reg, "app", None, "sig", subject=ref)
    deletes.delete_manifest(reg, "app", sig)
    deletes.delete_manifest(reg, "app", subject)
    trash.purge(reg, f"app@{subject}")
    reg.clock.advance(DELAY + 1)
    gc(reg)  # the referrer is pending: its review finds nothing to do
    trash.restore(reg, f"app@{sig}")
    assert manifests.get(reg, "app", sig).digest == sig
    reg.clock.advance(DELAY + 1)
    assert gc(reg).kinds["manifests"].objects == 1
    drain(reg)
    assert rows(reg) == EMPTY


# ---- 4. gc --delete-untagged sweeps untagged manifests that never got a review ---------------
def test_delete_untagged_override_finds_manifests_untagged_without_a_review(reg):
    old, content = put_image(reg, "app", "latest", "old")
    new, kept = put_image(reg, "app", "latest", "new")  # delete_untagged is off: no review queued
    reg.clock.advance(DELAY + 1)
    assert gc(reg, delete_untagged=True).kinds["manifests"].objects == 0  # no review: nothing due
    preview = gc(reg, delete_untagged=True, sweep_untagged=True, dry_run=True)
    assert [i["digest"] for i in preview.items if i["kind"] == "manifests"] == [old]
    assert manifests.get(reg, "app", old).digest == old
    assert gc(reg, delete_untagged=True, sweep_untagged=True).kinds["manifests"].objects == 1
    with pytest.raises(RegistryError):
        manifests.get(reg, "app", old)
    reg.clock.advance(DELAY + 1)
    gc(reg)
    assert not {sha256(c) for c in content[:1] + content[-1:]} & stored_blobs(reg)
    pull_all(reg, "app", new, kept)


def test_sweep_leaves_young_children_and_live_referrers_alone(reg):
    amd, _ = put_image(reg, "app", None, "amd")
    idx = put_index(reg, "app", "multi", [amd])
    ref = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": idx, "size": 10}
    sig, _ = put_image(reg, "app", None, "sig", subject=ref)
    young, _ = put_image(reg, "app", None, "young")
    reg.clock.advance(DELAY - 10)
    young2, _ = put_image(reg, "app", None, "young2")
    reg.clock.advance(11)
    preview = gc(reg, delete_untagged=True, sweep_untagged=True, dry_run=True)
    assert [i["digest"] for i in preview.items if i["kind"] == "manifests"] == [young]
    assert gc(reg, delete_untagged=True, sweep_untagged=True).kinds["manifests"].objects == 1
    with pytest.raises(RegistryError):
        manifests.get(reg, "app", young)
    for d in (amd, idx, sig, young2):
        assert manifests.get(reg, "app", d).digest == d
    reg.clock.advance(DELAY)
    assert gc(reg, delete_untagged=True).kinds["manifests"].objects == 1  # the young one was queued


def test_gc_cli_delete_untagged_flag_sweeps():
    from dockyard.cli import build_parser, gc_overrides

    args = build_parser().parse_args(["gc", "--delete-untagged"])
    assert gc_overrides(args) == {"dry_run": False, "delete_untagged": True, "sweep_untagged": True}
    args = build_parser().parse_args(["gc", "--no-delete-untagged", "--dry-run"])
    assert gc_overrides(args) == {"dry_run": True, "delete_untagged": False}
    assert gc_overrides(build_parser().parse_args(["gc"])) == {"dry_run": False}


# ---- 5. restoring a tag whose image was deleted since restores the image too ------------------
def test_tag_restore_brings_back_the_image_deleted_after_the_tag(reg):
    d, content = put_image(reg, "app", "v1", "one")
    manifests.put(reg, "app", "v2", manifests.get(reg, "app", "v1").payload,
                  "application/vnd.oci.image.manifest.v1+json")
    deletes.delete_manifest(reg, "app", "v1")
    deletes.delete_manifest(reg, "app", d)  # v2 goes to the trash with the image
    result = trash.restore(reg, "app:v1")
    assert sorted(result.restored_tags) == ["v1", "v2"] and result.restored_manifests == 1
    pull_all(reg, "app", d, content)
    assert manifests.get(reg, "app", "v1").digest == d
    assert trash.listing(reg) == {"images": [], "tags": []}
    drain(reg)
    pull_all(reg, "app", d, content)


def test_tag_restore_fails_cleanly_when_its_image_cannot_come_back(reg):
    amd, _ = put_image(reg, "app", None, "amd")
    idx = put_index(reg, "app", "v1", [amd])
    deletes.delete_manifest(reg, "app", "v1")
    deletes.delete_manifest(reg, "app", idx)
    child_id = manifest_id(reg, "app", amd)
    with reg.db.write() as conn:  # the child was purged under the index (as an older version could)
        repo = RepositoryStore(conn).get("app", include_deleted=True)
        purge_manifests(conn, [PurgeTarget(child_id, repo.id, amd)], reg.now(),
                        Collector.for_registry(reg).opts.purge)
    with pytest.raises(RegistryError, match="child manifest"):
        trash.restore(reg, "app:v1")
    with pytest.raises(RegistryError):
        manifests.get(reg, "app", "v1")
    assert [t["tag"] for t in trash.listing(reg)["tags"]] == ["v1"]  # nothing changed


# ---- 6. a child stays while an index that can still be restored references it ---------------
def trash_child_first(reg, amd):
    """The child went to the trash before its index (an older version, or a policy did it)."""
    child = manifest_id(reg, "app", amd)
    with reg.db.write() as conn:
        ManifestStore(conn).mark_pending_delete([child], reg.now(), None, reg.now() + SCRUB)


def test_child_stays_while_its_index_is_restorable(reg):
    amd, content = put_image(reg, "app", None, "amd")
    idx = put_index(reg, "app", "v1", [amd])
    trash_child_first(reg, amd)
    reg.clock.advance(SCRUB / 2)
    deletes.delete_manifest(reg, "app", idx)
    with pytest.raises(Conflict, match="references this image"):  # 409
        trash.purge(reg, f"app@{amd}")
    reg.clock.advance(SCRUB / 2 + 1)  # the child's scrub time has passed, the index's not
    assert Scrubber.for_registry(reg, dry_run=True).run().kinds["images"].objects == 0
    assert scrub(reg).kinds["images"].objects == 0
    result = trash.restore(reg, f"app@{idx}")
    assert result.restored_manifests == 2 and result.restored_tags == ["v1"]
    pull_all(reg, "app", amd, content)


def test_child_kept_for_its_index_goes_with_it(reg):
    amd, content = put_image(reg, "app", None, "amd")
    arm, _ = put_image(reg, "app", None, "arm")
    inner = put_index(reg, "app", None, [arm])
    idx = put_index(reg, "app", "v1", [amd, inner])
    trash_child_first(reg, amd)
    with reg.db.write() as conn:
        ManifestStore(conn).mark_pending_delete([manifest_id(reg, "app", inner)], reg.now(), None, reg.now())
    reg.clock.advance(SCRUB / 2)
    assert Scrubber.for_registry(reg, batch_size=1).run().kinds["images"].objects == 0
    deletes.delete_manifest(reg, "app", idx)
    reg.clock.advance(SCRUB / 2 + 1)
    assert scrub(reg).kinds["images"].objects == 0
    trash.restore(reg, f"app@{idx}")
    deletes.delete_manifest(reg, "app", idx)  # delete it again: the index and its children go together
    for m in (amd, arm, inner):
        with reg.db.write() as conn:
            ManifestStore(conn).mark_pending_delete([manifest_id(reg, "app", m)], reg.now(), None,
                                                    reg.now() + SCRUB)
    drain(reg)
    assert rows(reg) == EMPTY
    assert not {sha256(c) for c in content} & stored_blobs(reg)


def test_child_of_a_live_index_is_not_purged(reg):
    amd, content = put_image(reg, "app", None, "amd")
    put_index(reg, "app", "v1", [amd])
    trash_child_first(reg, amd)
    drain(reg)
    trash.restore(reg, f"app@{amd}")
    pull_all(reg, "app", amd, content)


# ---- 7. fsck: every row is referenced, queued for review, or tombstoned ----------------------
def fsck(reg, **kw):
    from dockyard.lifecycle.fsck import Fsck

    return Fsck(reg.db, reg.storage, reg.clock, reg.config.fsck_grace,
                gc=Collector.for_registry(reg).opts, **kw).check_references()


def lose_reviews(reg):
    """What a crash of an older version (or a bug) leaves: rows whose reviews are gone."""
    with reg.db.write() as conn:
        for table in (schema.gc_blob_reviews, schema.gc_link_reviews, schema.gc_manifest_reviews,
                      schema.gc_repository_reviews):
            conn.execute(delete(table))


def test_fsck_finds_nothing_in_a_healthy_registry(reg):
    d, _ = put_image(reg, "app", "v1", "one")
    put_image(reg, "app", "v2", "two")
    deletes.delete_manifest(reg, "app", d)
    lose_reviews(reg)
    report = fsck(reg)
    assert report.unreviewed == {"blobs": 0, "links": 0, "manifests": 0, "repositories": 0}
    assert report.requeued == 0


def test_fsck_requeues_rows_nothing_would_review(reg):
    d, content = put_image(reg, "app", None, "one")  # untagged: kept, delete_untagged is off
    orphan = put_blob(reg, "app", b"a layer no manifest uses")
    with reg.db.write() as conn:  # a blob row with no link either (and an empty repository)
        conn.execute(delete(schema.repository_blobs).where(schema.repository_blobs.c.digest == orphan))
        repo = RepositoryStore(conn).ensure("empty", reg.now())
    lose_reviews(reg)
    report = fsck(reg, requeue=False)
    assert report.unreviewed == {"blobs": 1, "links": 0, "manifests": 0, "repositories": 1}
    assert {(i["kind"], str(i["key"])) for i in report.unreviewed_items} == {("blobs", orphan),
                                                                            ("repositories", str(repo.id))}
    reg.clock.advance(DELAY + 1)
    assert gc(reg).total_objects == 0  # nothing queued: kept forever
    report = fsck(reg)
    assert report.requeued == 2
    assert fsck(reg).unreviewed == {"blobs": 0, "links": 0, "manifests": 0, "repositories": 0}
    reg.clock.advance(DELAY + 1)
    report = gc(reg)
    assert report.kinds["blobs"].objects == 1 and report.kinds["repositories"].objects == 1
    assert orphan not in stored_blobs(reg)
    pull_all(reg, "app", d, content)


@pytest.mark.parametrize("reg", [{"delete_untagged": True}], indirect=True)
def test_fsck_requeues_an_untagged_manifest_and_an_unused_link(reg):
    d, content = put_image(reg, "app", None, "one")
    layer = put_blob(reg, "app", b"unused layer")
    lose_reviews(reg)
    report = fsck(reg)
    assert report.unreviewed == {"blobs": 0, "links": 1, "manifests": 1, "repositories": 0}
    drain(reg)
    assert rows(reg) == EMPTY
    assert not ({sha256(c) for c in content} | {layer}) & stored_blobs(reg)
    assert fsck(reg).unreviewed == {"blobs": 0, "links": 0, "manifests": 0, "repositories": 0}


def test_fsck_cli_requeues_by_default():
    from dockyard.cli import build_parser

    assert build_parser().parse_args(["fsck"]).requeue is True
    assert build_parser().parse_args(["fsck", "--no-requeue"]).requeue is False
