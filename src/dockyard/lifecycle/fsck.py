"""fsck: reconcile storage with the database. The only code that walks storage.

- data with no row and no tombstone, older than ``fsck_grace``, is a leak (a crash, an
  older version); it is reported, and with ``delete=True`` handed to the collector as a
  tombstone (fsck deletes nothing itself: the collector does, with its pool, retries and
  rate limit, and a push of the same digest meanwhile cancels the tombstone and keeps it);
- a ready blob row whose data is missing is reported, never dropped;
- a blob whose stored size differs from its row's is corrupt (always checked: the stat is
  done anyway); ``verify=True`` also re-hashes every blob and reports the corrupt ones;
- the pipeline's invariant: every blob row, layer link, manifest and repository is
  referenced, or has a pending review (a pending_delete image has its scrub time), or a
  tombstone. A row that breaks it would be kept forever (a lost review: a crash of an older
  version, a bug); it is reported and, unless ``requeue=False``, queued for review after
  ``gc_delay``. That is always safe: a review re-checks everything under lock and removes
  only what is still unreferenced then. Manifests count as unreferenced when the collector
  would take them under the current settings (``delete_untagged``, referrers of a purged
  subject), whatever their age.

Streams: storage is listed page by page and rows are checked in batches, so memory
does not grow with the store.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from itertools import islice
from typing import Callable, Iterable, Iterator

from dockyard.clock import Clock
from dockyard.lifecycle import quotas
from dockyard.lifecycle.collector import GcOptions, collectable_manifests
from dockyard.meta.blobs import BlobStore
from dockyard.meta.db import Database
from dockyard.meta.schema import ACTIVE
from dockyard.meta.stores import Stores
from dockyard.meta.uploads import UploadStore
from dockyard.storage import paths
from dockyard.storage.base import ObjectInfo, StorageDriver

log = logging.getLogger(__name__)
BATCH = 1000
UNREVIEWED_KINDS = ("blobs", "links", "manifests", "repositories")


@dataclass
class FsckReport:
    delete: bool = False
    scanned_objects: int = 0
    scanned_rows: int = 0
    leaks: int = 0
    leaked_bytes: int = 0
    deleted: int = 0
    young: int = 0
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    leak_keys: list[str] = field(default_factory=list)
    requeue: bool = True
    unreviewed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(UNREVIEWED_KINDS, 0))
    unreviewed_items: list[dict] = field(default_factory=list)
    requeued: int = 0
    quota_drift: list[dict] = field(default_factory=list)
    """Quotas whose recorded usage differed from a recount of the links (fixed)."""
    duration: float = 0.0
    job = "fsck"

    @property
    def dry_run(self) -> bool:
        return not self.delete

    def as_dict(self) -> dict:
        return {k: v for k, v in vars(self).items()}

    def table(self) -> str:
        return render(self.as_dict())


def render(d: dict) -> str:
    """The table of an fsck report, from :meth:`FsckReport.as_dict` (local or from the admin API)."""
    verb = "deleted" if d["delete"] else "would delete (use --delete)"
    drift = d.get("quota_drift") or []
    return "\n".join([
        f"storage objects scanned  {d['scanned_objects']}",
        f"blob rows checked        {d['scanned_rows']}",
        f"leaks                    {d['leaks']} ({d['leaked_bytes']} bytes); {verb}: "
        f"{d['deleted'] if d['delete'] else d['leaks']}",
        f"too young to judge       {d['young']}",
        f"rows with missing data   {len(d['missing'])}",
        f"corrupt blobs            {len(d['corrupt'])}",
        "unreferenced, no review  " + ", ".join(f"{k} {n}" for k, n in d["unreviewed"].items())
        + (f"; re-queued: {d['requeued']}" if d["requeue"] else "; not re-queued (--no-requeue)"),
        "quota usage drift        " + (", ".join(f"{q['quota']} {q['recorded']} -> {q['exact']} (fixed)"
                                                 for q in drift) or "none"),
    ])


def _batches(it: Iterable, n: int) -> Iterator[list]:
    it = iter(it)
    while batch := list(islice(it, n)):
        yield batch


class Fsck:
    def __init__(self, db: Database, storage: StorageDriver, clock: Clock, grace: float, *,
                 delete: bool = False, verify: bool = False, progress: Callable[[FsckReport], None] | None = None,
                 gc: GcOptions | None = None, requeue: bool = True):
        self.db, self.storage, self.clock, self.grace = db, storage, clock, grace
        self.report = FsckReport(delete=delete, requeue=requeue)
        self.verify = verify
        self.progress = progress
        self.gc = gc or GcOptions()

    def run(self) -> FsckReport:
        started = time.monotonic()
        self._walk(paths.BLOBS, self._known_blobs)
        self._walk(paths.UPLOADS, self._known_uploads)
        self._rows()
        self.check_references()
        self.report.quota_drift = quotas.reconcile(self.db, self.gc.quotas, self.clock.now())
        self.report.duration = round(time.monotonic() - started, 3)
        return self.report

    # ---- every row referenced, reviewed or tombstoned ------------------------------
    def check_references(self) -> FsckReport:
        """Find rows that nothing references and nothing will review; re-queue them."""
        self._pages("blobs", "", lambda q, after: q.orphans.blobs(after, BATCH),
                    lambda q, keys, when: q.reviews.add_blobs(keys, when, "fsck"))
        self._pages("links", (0, ""), lambda q, after: q.orphans.links(after, BATCH),
                    lambda q, keys, when: q.reviews.add_link_pairs(keys, when, "fsck"))
        self._pages("manifests", 0, self._manifests_page,
                    lambda q, keys, when: q.reviews.add_manifests(keys, when, "fsck"))
        self._pages("repositories", 0, lambda q, after: q.orphans.repositories(after, BATCH),
                    lambda q, keys, when: q.reviews.add_repositories(keys, when))
        return self.report

    def _manifests_page(self, q: Stores, after: int) -> list[tuple[int, bool]]:
        ids = q.reviews.untagged_unreviewed_manifests(after, BATCH)
        rows = [m for m in q.manifests.for_review(ids, lock=False) if m.state == ACTIVE]
        orphans = {m.id for m in collectable_manifests(q, rows, self.gc)}
        return [(i, i in orphans) for i in ids]

    def _pages(self, kind: str, start, page: Callable, requeue: Callable) -> None:
        r = self.report
        after = start
        while True:
            with self.db.read() as conn:
                rows = page(Stores(conn), after)
            if not rows:
                return
            after = rows[-1][0]
            orphans = [key for key, orphan in rows if orphan]
            if not orphans:
                continue
            r.unreviewed[kind] += len(orphans)
            for key in orphans:
                log.warning("fsck: %s %s is unreferenced and has no pending review", kind[:-1], key)
                if len(r.unreviewed_items) < 10_000:
                    r.unreviewed_items.append({"kind": kind, "key": list(key) if isinstance(key, tuple) else key})
            if r.requeue:
                with self.db.write() as conn:
                    requeue(Stores(conn), orphans, self.clock.now() + self.gc.gc_delay)
                r.requeued += len(orphans)
            if self.progress:
                self.progress(r)

    # ---- storage -> database -------------------------------------------------
    def _known_blobs(self, objs: list[ObjectInfo]) -> set[str]:
        digests = {o.key: paths.digest_from_blob_key(o.key) for o in objs}
        with self.db.read() as conn:
            rows = BlobStore(conn).existing(d for d in digests.values() if d)
            tomb = Stores(conn).tombstones.existing_keys([o.key for o in objs])
        return {k for k, d in digests.items() if d in rows} | tomb

    def _known_uploads(self, objs: list[ObjectInfo]) -> set[str]:
        ids = {o.key: o.key[len(paths.UPLOADS):] for o in objs}
        with self.db.read() as conn:
            rows = UploadStore(conn).existing(ids.values())
            tomb = Stores(conn).tombstones.existing_keys([o.key for o in objs])
        return {k for k, i in ids.items() if i in rows} | tomb

    def _walk(self, prefix: str, known: Callable[[list[ObjectInfo]], set[str]]) -> None:
        r = self.report
        cutoff = self.clock.now() - self.grace
        for batch in _batches(self.storage.list(prefix), BATCH):
            r.scanned_objects += len(batch)
            keep = known(batch)
            buried = []
            for obj in batch:
                if obj.key in keep:
                    continue
                if obj.modified > cutoff:
                    r.young += 1
                    continue
                r.leaks += 1
                r.leaked_bytes += obj.size
                if len(r.leak_keys) < 10_000:
                    r.leak_keys.append(obj.key)
                if r.delete:
                    buried.append(obj)
                    log.info("fsck: leaked object %s (%d bytes) handed to the collector", obj.key, obj.size)
                else:
                    log.info("fsck: leaked object %s (%d bytes)", obj.key, obj.size)
            if buried:  # fsck deletes nothing itself: the collector does, with its pool and rate limit
                self._bury(buried)
                r.deleted += len(buried)
            if self.progress:
                self.progress(r)

    def _bury(self, objs: list[ObjectInfo]) -> None:
        now = self.clock.now()
        rows = []
        for obj in objs:
            digest = paths.digest_from_blob_key(obj.key)
            rows.append({"key": obj.key, "kind": "blob" if digest else "upload", "digest": digest,
                         "size": obj.size, "created_at": now, "next_attempt_at": now})
        with self.db.write() as conn:
            Stores(conn).tombstones.add(rows)

    # ---- database -> storage ---------------------------------------------------
    def _rows(self) -> None:
        r = self.report
        last = ""
        while True:
            with self.db.read() as conn:
                page = BlobStore(conn).ready_page(last, BATCH)
            if not page:
                return
            last = page[-1].digest
            for row in page:
                r.scanned_rows += 1
                key = paths.blob_key(row.digest)
                info = self.storage.stat(key)
                if info is None:
                    r.missing.append(row.digest)
                    log.error("fsck: blob %s has a row but no data", row.digest)
                elif info.size != row.size:  # the stat is done anyway: sizes are always checked
                    r.corrupt.append(row.digest)
                    log.error("fsck: blob %s is corrupt (stored %d bytes, recorded %d)", row.digest, info.size,
                              row.size)
                elif self.verify and not self._hash_ok(key, row.digest):
                    r.corrupt.append(row.digest)
                    log.error("fsck: blob %s is corrupt (content does not match its digest)", row.digest)
            if self.progress:
                self.progress(r)

    def _hash_ok(self, key: str, digest: str) -> bool:
        algorithm, _, hexdigest = digest.partition(":")
        h = hashlib.new(algorithm)
        for chunk in self.storage.read(key):
            h.update(chunk)
        return h.hexdigest() == hexdigest
