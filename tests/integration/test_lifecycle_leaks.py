"""Issue 18: every unreferenced object is reclaimed exactly once.

Each test walks one sequence of deletes, restores, collections and scrubs that used to
leave an object with no reference and no pending review (kept forever), or that purged an
object something restorable still needed. In process, on SQLite and PostgreSQL, with a
fake clock.
"""

import hashlib

import pytest
from sqlalchemy import delete, func, select

from dockyard.errors import RegistryError
from dockyard.lifecycle.collector import Collector
from dockyard.lifecycle.scrubber import Scrubber
from dockyard.meta import schema
from dockyard.meta.manifests import ManifestStore
from dockyard.meta.repositories import RepositoryStore
from dockyard.registry import blobs, manifests, trash
from tests.lifecycle_support import make_registry, put_image, put_index, stored_blobs
from tests.support import sha256

DELAY = 60
SCRUB = 3600


@pytest.fixture
def reg(tmp_path, backend, request):
    settings = {"scrub_time": SCRUB, **getattr(request, "param", {})}
    with make_registry(tmp_path, backend, **settings) as r:
        yield r


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
        manifests.delete(reg, "app", d)
    for digest in digests:
        blobs.delete(reg, "app", digest)
    if blobs_first:
        manifests.delete(reg, "app", d)
    reg.clock.advance(DELAY + 1)
    assert gc(reg).kinds["blobs"].objects == 0  # the pending image still references them
    drain(reg)
    assert not set(digests) & stored_blobs(reg)
    assert rows(reg) == EMPTY


# ---- 2. an expiring trashed tag queues a review of its manifest ----------------------------
@pytest.mark.parametrize("reg", [{"delete_untagged": True}], indirect=True)
def test_image_kept_only_by_a_trashed_tag_is_collected_when_the_tag_expires(reg):
    d, content = put_image(reg, "app", "v1", "one")
    manifests.delete(reg, "app", "v1")
    reg.clock.advance(DELAY + 1)
    gc(reg)
    assert manifests.get(reg, "app", d).digest == d  # the tag can still be restored
    drain(reg)
    with pytest.raises(RegistryError):
        manifests.get(reg, "app", d)
    assert not {sha256(c) for c in content} & stored_blobs(reg)
    assert rows(reg) == EMPTY
