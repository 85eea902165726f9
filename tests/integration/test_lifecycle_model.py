"""A model test of the reclamation pipeline (hypothesis, stateful), on SQLite with a fake clock.

Random pushes (layers shared between images and repositories), tag deletes, manifest
deletes, blob unlinks, restores, collections, scrubs and waits, checked against a small
model after every step:
- every live tag, and every active image, pulls completely;
- every row is referenced, queued for review, or tombstoned (fsck's invariant);
and at the end, with everything deleted and every grace period passed, the blob storage
and the tables are empty: every unreferenced object was reclaimed.
"""

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sqlalchemy import func, select

from dockyard.lifecycle import deletes, trash
from dockyard.errors import RegistryError
from dockyard.lifecycle.collector import Collector
from dockyard.lifecycle.fsck import Fsck
from dockyard.lifecycle.scrubber import Scrubber
from dockyard.meta import schema
from dockyard.registry import blobs, manifests
from tests.lifecycle_support import make_registry, put_image, stored_blobs
from tests.support import make_layer, sha256
import pytest

pytestmark = pytest.mark.slow  # a long race, kill or soak: the README's test command runs it too

DELAY = 60
SCRUB = 600
REPOS = ["a", "b"]
TAGS = ["t1", "t2", "t3"]
SHARED = [make_layer(f"shared-{i}") for i in range(3)]


@dataclass
class Image:
    repo: str
    digest: str
    content: list[bytes]
    state: str = "active"  # active | pending
    deleted_at: float = 0.0
    trashed_tags: list[str] = field(default_factory=list)


class Lifecycle(RuleBasedStateMachine):
    DELETE_UNTAGGED = False
    BACKEND = "sqlite"

    def __init__(self):
        super().__init__()
        self._tmp = tempfile.TemporaryDirectory()
        self._ctx = make_registry(Path(self._tmp.name), self.BACKEND, gc_delay=DELAY, scrub_time=SCRUB,
                                  delete_untagged=self.DELETE_UNTAGGED)
        self.reg = self._ctx.__enter__()
        self.images: dict[tuple[str, str], Image] = {}
        self.tags: dict[tuple[str, str], str] = {}
        self.seq = 0

    def teardown(self):
        try:
            if self.reg is not None and not getattr(self, "_failed", False):
                self._delete_everything_and_check_empty()
        finally:
            self._ctx.__exit__(None, None, None)
            self._tmp.cleanup()

    # ---- helpers ------------------------------------------------------------------------
    def active(self) -> list[Image]:
        return [i for i in self.images.values() if i.state == "active"]

    def pending(self) -> list[Image]:
        return [i for i in self.images.values() if i.state == "pending"]

    def pulls(self, image: Image, reference: str) -> None:
        assert manifests.get(self.reg, image.repo, reference).digest == image.digest
        for data in image.content:
            blob = blobs.stat(self.reg, image.repo, sha256(data))
            assert "sha256:" + hashlib.sha256(b"".join(blobs.read(self.reg, blob))).hexdigest() == sha256(data)

    # ---- rules --------------------------------------------------------------------------
    @rule(repo=st.sampled_from(REPOS), tag=st.sampled_from(TAGS + [None]),
          shared=st.lists(st.integers(0, len(SHARED) - 1), max_size=2, unique=True))
    def push(self, repo, tag, shared):
        self.seq += 1
        digest, content = put_image(self.reg, repo, tag, f"img-{self.seq}", shared=[SHARED[i] for i in shared])
        self.images[(repo, digest)] = Image(repo, digest, content)
        if tag:
            self.tags[(repo, tag)] = digest

    @precondition(lambda self: self.tags)
    @rule(data=st.data())
    def delete_tag(self, data):
        repo, tag = data.draw(st.sampled_from(sorted(self.tags)))
        deletes.delete_manifest(self.reg, repo, tag)
        del self.tags[(repo, tag)]

    @precondition(lambda self: self.active())
    @rule(data=st.data())
    def delete_manifest(self, data):
        image = data.draw(st.sampled_from(sorted(self.active(), key=lambda i: i.digest)))
        if not self._delete(image):
            return
        image.state, image.deleted_at = "pending", self.reg.now()
        image.trashed_tags = sorted(t for (r, t), d in self.tags.items() if r == image.repo and d == image.digest)
        for t in image.trashed_tags:
            del self.tags[(image.repo, t)]

    @precondition(lambda self: self.images)
    @rule(data=st.data())
    def delete_blob(self, data):
        """Unlink a layer of an image that no active image of the repository uses (a pending
        one may: its restore links it again)."""
        image = data.draw(st.sampled_from(sorted(self.images.values(), key=lambda i: i.digest)))
        used = {sha256(c) for i in self.active() if i.repo == image.repo for c in i.content}
        candidates = sorted({sha256(c) for c in image.content} - used)
        if not candidates:
            return
        digest = data.draw(st.sampled_from(candidates))
        try:
            deletes.unlink_blob(self.reg, image.repo, digest)
        except RegistryError:
            pass  # already unlinked, or collected

    @precondition(lambda self: self.pending())
    @rule(data=st.data())
    def restore(self, data):
        image = data.draw(st.sampled_from(sorted(self.pending(), key=lambda i: i.digest)))
        try:
            result = trash.restore(self.reg, f"{image.repo}@{image.digest}")
        except RegistryError:
            assert self.reg.now() >= image.deleted_at + SCRUB, "purged before its scrub time"
            del self.images[(image.repo, image.digest)]
            return
        expected = [t for t in image.trashed_tags if (image.repo, t) not in self.tags]
        assert sorted(result.restored_tags) == expected
        image.state = "active"
        for t in expected:
            self.tags[(image.repo, t)] = image.digest

    @rule(seconds=st.sampled_from([0, SCRUB + 1]))
    def wait_and_scrub(self, seconds):
        """Time passes; the scrubber runs (purges, expires trashed tags, collects)."""
        self.reg.clock.advance(seconds)
        Scrubber.for_registry(self.reg).run()

    @rule(seconds=st.sampled_from([0, DELAY // 2, DELAY + 1, SCRUB // 2, SCRUB + 1]))
    def wait_and_collect(self, seconds):
        """Time passes; the collector runs (as the server's scheduler would)."""
        self.reg.clock.advance(seconds)
        Collector.for_registry(self.reg).run()

    def _delete(self, image: Image) -> bool:
        try:
            deletes.delete_manifest(self.reg, image.repo, image.digest)
        except RegistryError:  # collected: untagged, with delete_untagged on
            assert self.DELETE_UNTAGGED and image.digest not in self.tags.values()
            del self.images[(image.repo, image.digest)]
            return False
        return True

    # ---- invariants ---------------------------------------------------------------------
    @invariant()
    def live_images_pull(self):
        self._failed = True
        for (repo, tag), digest in self.tags.items():
            self.pulls(self.images[(repo, digest)], tag)
        if not self.DELETE_UNTAGGED:  # untagged images stay too
            for image in self.active():
                self.pulls(image, image.digest)
        self._failed = False

    @invariant()
    def every_row_is_referenced_or_reviewed(self):
        self._failed = True
        report = Fsck(self.reg.db, self.reg.storage, self.reg.clock, 0,
                      gc=Collector.for_registry(self.reg).opts, requeue=False).check_references()
        assert not report.unreviewed_items, report.unreviewed_items
        self._failed = False

    # ---- the end ------------------------------------------------------------------------
    def _delete_everything_and_check_empty(self):
        for image in self.active():
            self._delete(image)
        for _ in range(4):
            self.reg.clock.advance(SCRUB + DELAY + 1)
            Scrubber.for_registry(self.reg).run()
        assert stored_blobs(self.reg) == set()
        with self.reg.db.read() as conn:
            counts = {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                      for t in (schema.blobs, schema.repository_blobs, schema.manifests, schema.manifest_references,
                                schema.repositories, schema.tags, schema.trashed_tags, schema.uploads,
                                schema.gc_tombstones)}
        assert set(counts.values()) == {0}, counts


class LifecycleDeleteUntagged(Lifecycle):
    """The same with delete_untagged on: untagged images may go (tags in the trash keep them)."""
    DELETE_UNTAGGED = True


class LifecyclePostgres(Lifecycle):
    """On PostgreSQL (a fresh database per sequence), delete_untagged on: fewer sequences here."""
    DELETE_UNTAGGED = True
    BACKEND = "postgres"


# sequences per variant: a few dozen in the suite; bench/lifecycle_model_soak.py runs thousands
EXAMPLES = int(os.environ.get("DOCKYARD_MODEL_EXAMPLES", "40"))
SETTINGS = settings(max_examples=EXAMPLES, stateful_step_count=20, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
Lifecycle.TestCase.settings = SETTINGS
LifecycleDeleteUntagged.TestCase.settings = SETTINGS
LifecyclePostgres.TestCase.settings = settings(SETTINGS, max_examples=max(5, EXAMPLES // 8))
TestLifecycleModel = Lifecycle.TestCase
TestLifecycleModelDeleteUntagged = LifecycleDeleteUntagged.TestCase
TestLifecycleModelPostgres = LifecyclePostgres.TestCase
