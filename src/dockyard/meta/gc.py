"""QueueStore: review queues, tombstones and run history of the reclamation pipeline.

Enqueueing happens in the transaction that removed a reference, through
:meth:`QueueStore.review_blob` and friends. Re-enqueueing an entry keeps the later
``review_after`` of the two: a new reason to wait is never shortened.

``claim_due`` is the one queue-claiming function: ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so several collectors share a queue and none takes an entry twice; on
SQLite the collector's write transaction is exclusive, which gives the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, bindparam, case, delete, exists, func, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from dockyard.meta.db import cached_statement, in_pairs
from dockyard.meta.schema import (
    ACTIVE,
    COMMITTING,
    PENDING_DELETE,
    tag_history,
    trashed_tags,
    blobs,
    gc_blob_reviews,
    gc_link_reviews,
    gc_manifest_reviews,
    gc_repository_reviews,
    gc_runs,
    gc_tombstones,
    manifest_references,
    manifests,
    repositories,
    repository_blobs,
    tags,
    uploads,
)

QUEUES = {
    "manifests": gc_manifest_reviews,
    "links": gc_link_reviews,
    "blobs": gc_blob_reviews,
    "repositories": gc_repository_reviews,
}


@dataclass(frozen=True, slots=True)
class PurgeTarget:
    id: int
    repository_id: int
    digest: str


@dataclass(frozen=True, slots=True)
class Tombstone:
    key: str
    kind: str
    digest: str | None
    size: int
    attempts: int


# the push path's statements, built once (no construct or cache key to build per request)
_LOCK_BLOB = (select(blobs.c.digest, blobs.c.size, blobs.c.state, blobs.c.created_at)
              .where(blobs.c.digest == bindparam("digest")).with_for_update())
_TOMBSTONE_OF = (select(gc_tombstones.c.key, gc_tombstones.c.lease_owner, gc_tombstones.c.next_attempt_at)
                 .where(gc_tombstones.c.digest == bindparam("digest")).with_for_update())


def _upsert_later(conn: Connection, table: Table, keys: list[str], rows: list[dict]) -> None:
    if not rows:
        return
    dialect = conn.dialect.name

    def build():
        if dialect == "postgresql":
            stmt = postgresql.insert(table)
            later = func.greatest(table.c.review_after, stmt.excluded.review_after)
        else:
            stmt = sqlite.insert(table)
            later = func.max(table.c.review_after, stmt.excluded.review_after)
        return stmt.on_conflict_do_update(index_elements=keys, set_={"review_after": later})

    conn.execute(cached_statement(("upsert_later", dialect, table, tuple(keys)), build), rows)


def _group_by_value(mapping: dict) -> dict:
    out: dict = {}
    for k, v in mapping.items():
        out.setdefault(v, []).append(k)
    return out


class QueueStore:
    def __init__(self, conn: Connection):
        self.conn = conn

    # ---- enqueue (same transaction as the reference change) ---------------
    def review_blobs(self, digests, when: float, reason: str) -> None:
        _upsert_later(self.conn, gc_blob_reviews, ["digest"],
                      [{"digest": d, "review_after": when, "reason": reason} for d in sorted(set(digests))])

    def review_links(self, repo_id: int, digests, when: float, reason: str) -> None:
        self.review_link_pairs([(repo_id, d) for d in digests], when, reason)

    def review_link_pairs(self, pairs, when: float, reason: str) -> None:
        _upsert_later(self.conn, gc_link_reviews, ["repository_id", "digest"],
                      [{"repository_id": r, "digest": d, "review_after": when, "reason": reason}
                       for r, d in sorted(set(pairs))])

    def review_manifests(self, manifest_ids, when: float, reason: str) -> None:
        _upsert_later(self.conn, gc_manifest_reviews, ["manifest_id"],
                      [{"manifest_id": i, "review_after": when, "reason": reason} for i in sorted(set(manifest_ids))])

    def review_repositories(self, repo_ids, when: float) -> None:
        _upsert_later(self.conn, gc_repository_reviews, ["repository_id"],
                      [{"repository_id": r, "review_after": when} for r in sorted(set(repo_ids))])

    def postpone_link_review(self, repo_id: int, digest: str, until: float) -> bool:
        """Push a pending link review back (a client just relied on the link). False if none is pending."""
        res = self.conn.execute(
            update(gc_link_reviews)
            .where(gc_link_reviews.c.repository_id == repo_id, gc_link_reviews.c.digest == digest,
                   gc_link_reviews.c.review_after < until)
            .values(review_after=until))
        return res.rowcount > 0

    # ---- purging (set-based) ---------------------------------------------------
    def purge_rows(self, targets, now: float, actor: str | None) -> list[tuple[int, str, str]]:
        """Delete the manifests' rows, references, tags (recorded in tag_history) and trash
        entries; returns their references as (repository_id, kind, digest)."""
        ids = [t.id for t in targets]
        repo_of = {t.id: t.repository_id for t in targets}
        refs = [(repo_of[r.manifest_id], r.kind, r.digest) for r in self.conn.execute(
            select(manifest_references.c.manifest_id, manifest_references.c.kind, manifest_references.c.digest)
            .where(manifest_references.c.manifest_id.in_(ids)))]
        tagged = list(self.conn.execute(select(tags.c.repository_id, tags.c.name, manifests.c.digest)
                                        .join(manifests, manifests.c.id == tags.c.manifest_id)
                                        .where(tags.c.manifest_id.in_(ids))))
        if tagged:
            self.conn.execute(delete(tags).where(tags.c.manifest_id.in_(ids)))
            self.conn.execute(tag_history.insert(), [
                {"repository_id": t.repository_id, "tag": t.name, "manifest_digest": t.digest, "action": "delete",
                 "at": now, "actor": actor} for t in tagged])
        self.conn.execute(delete(trashed_tags).where(trashed_tags.c.manifest_id.in_(ids)))
        self.conn.execute(delete(manifest_references).where(manifest_references.c.manifest_id.in_(ids)))
        self.conn.execute(delete(gc_manifest_reviews).where(gc_manifest_reviews.c.manifest_id.in_(ids)))
        self.conn.execute(delete(manifests).where(manifests.c.id.in_(ids)))
        return refs

    def manifest_ids_of(self, pairs: list[tuple[int, str]]) -> list[int]:
        if not pairs:
            return []
        return list(self.conn.execute(select(manifests.c.id).where(
            in_pairs(self.conn, manifests.c.repository_id, manifests.c.digest, sorted(set(pairs))))).scalars())

    def referrer_ids_of(self, subjects: list[tuple[int, str]]) -> list[int]:
        if not subjects:
            return []
        return list(self.conn.execute(select(manifests.c.id).where(
            in_pairs(self.conn, manifests.c.repository_id, manifests.c.subject_digest, sorted(set(subjects))))).scalars())

    def due_pending_deletes(self, now: float, limit: int) -> list[PurgeTarget]:
        """pending_delete images whose scrub time has passed, claimed (SKIP LOCKED)."""
        rows = self.conn.execute(
            select(manifests.c.id, manifests.c.repository_id, manifests.c.digest)
            .where(manifests.c.state == PENDING_DELETE, manifests.c.scrub_after <= now)
            .order_by(manifests.c.scrub_after).limit(limit).with_for_update(skip_locked=True))
        return [PurgeTarget(r.id, r.repository_id, r.digest) for r in rows]

    def parents_of(self, pairs) -> dict[tuple[int, str], list[Any]]:
        """For each (repository, digest), the manifests of that repository (any state) that
        reference it as a child: rows of (id, state, scrub_after)."""
        pairs = sorted(set(pairs))
        if not pairs:
            return {}
        refs = manifest_references.c
        rows = self.conn.execute(
            select(refs.repository_id, refs.digest, manifests.c.id, manifests.c.state, manifests.c.scrub_after)
            .join(manifests, manifests.c.id == refs.manifest_id)
            .where(refs.kind == "manifest", in_pairs(self.conn, refs.repository_id, refs.digest, pairs)))
        out: dict[tuple[int, str], list[Any]] = {}
        for r in rows:
            out.setdefault((r.repository_id, r.digest), []).append(r)
        return out

    def defer_pending_deletes(self, scrub_after: dict[int, float]) -> None:
        """Move the scrub time of pending_delete manifests (claimed by the caller) later."""
        for when, ids in _group_by_value(scrub_after).items():
            self.conn.execute(update(manifests).where(manifests.c.id.in_(ids), manifests.c.state == PENDING_DELETE)
                              .values(scrub_after=when))

    # ---- set-based reviews (the collector's batches) ----------------------------
    def lock_blobs(self, digests, *, lock: bool = True) -> dict[str, Any]:
        """Blob rows, locked in digest order (a fixed order: no deadlock between collectors)."""
        wanted = sorted(set(digests))
        if not wanted:
            return {}
        q = (select(blobs.c.digest, blobs.c.size, blobs.c.state, blobs.c.created_at)
             .where(blobs.c.digest.in_(wanted)).order_by(blobs.c.digest))
        return {r.digest: r for r in self.conn.execute(q.with_for_update() if lock else q)}

    def links_of(self, pairs) -> dict[tuple[int, str], float]:
        pairs = sorted(set(pairs))
        if not pairs:
            return {}
        rows = self.conn.execute(select(repository_blobs.c.repository_id, repository_blobs.c.digest,
                                        repository_blobs.c.created_at)
                                 .where(in_pairs(self.conn, repository_blobs.c.repository_id, repository_blobs.c.digest,
                                                 pairs)))
        return {(r.repository_id, r.digest): r.created_at for r in rows}

    def referenced_in_repository(self, pairs, kind: str) -> set[tuple[int, str]]:
        """Those (repository, digest) pairs that some manifest of that repository (any state:
        pending ones can be restored) references as ``kind``: "blob" (a needed layer link) or
        "manifest" (a child of an index)."""
        pairs = sorted(set(pairs))
        if not pairs:
            return set()
        refs = manifest_references.c
        rows = self.conn.execute(
            select(refs.repository_id, refs.digest).distinct()
            .where(refs.kind == kind, in_pairs(self.conn, refs.repository_id, refs.digest, pairs)))
        return {(r.repository_id, r.digest) for r in rows}

    def delete_links(self, pairs) -> None:
        pairs = sorted(set(pairs))
        if pairs:
            self.conn.execute(delete(repository_blobs).where(
                in_pairs(self.conn, repository_blobs.c.repository_id, repository_blobs.c.digest, pairs)))

    def referenced_blobs(self, digests) -> set[str]:
        wanted = sorted(set(digests))
        if not wanted:
            return set()
        by_manifest = select(manifest_references.c.digest).where(
            manifest_references.c.kind == "blob", manifest_references.c.digest.in_(wanted))
        by_link = select(repository_blobs.c.digest).where(repository_blobs.c.digest.in_(wanted))
        return set(self.conn.execute(by_manifest.union(by_link)).scalars())

    def delete_blob_rows(self, digests) -> None:
        wanted = sorted(set(digests))
        if wanted:
            self.conn.execute(delete(blobs).where(blobs.c.digest.in_(wanted)))

    def add_tombstones(self, rows: list[dict]) -> None:
        if rows:
            stmt = (postgresql.insert(gc_tombstones) if self.conn.dialect.name == "postgresql"
                    else sqlite.insert(gc_tombstones)).on_conflict_do_nothing()
            self.conn.execute(stmt, [{"lease_owner": None, "attempts": 0, "last_error": None, **r} for r in rows])

    def manifests_for_review(self, ids, *, lock: bool = True) -> list[Any]:
        wanted = sorted(set(ids))
        if not wanted:
            return []
        q = (select(manifests.c.id, manifests.c.repository_id, manifests.c.digest, manifests.c.state,
                    manifests.c.size, manifests.c.subject_digest, manifests.c.pushed_at)
             .where(manifests.c.id.in_(wanted)).order_by(manifests.c.id))
        return list(self.conn.execute(q.with_for_update() if lock else q))

    def kept_by_tags(self, ids) -> set[int]:
        """Manifests with a live tag or a tag in the trash (restorable)."""
        wanted = sorted(set(ids))
        if not wanted:
            return set()
        live = select(tags.c.manifest_id).where(tags.c.manifest_id.in_(wanted))
        trashed = select(trashed_tags.c.manifest_id).where(trashed_tags.c.manifest_id.in_(wanted))
        return set(self.conn.execute(live.union(trashed)).scalars())

    def existing_manifests(self, pairs) -> set[tuple[int, str]]:
        pairs = sorted(set(pairs))
        if not pairs:
            return set()
        rows = self.conn.execute(select(manifests.c.repository_id, manifests.c.digest).where(
            in_pairs(self.conn, manifests.c.repository_id, manifests.c.digest, pairs)))
        return {(r.repository_id, r.digest) for r in rows}

    def untagged_unreviewed_manifests(self, after_id: int, limit: int) -> list[int]:
        """Active manifests with no tag (live or in the trash) and no pending review, by id
        after ``after_id`` (a keyset page): what ``gc --delete-untagged`` sweeps, for images
        untagged while ``delete_untagged`` was off (no review was queued then)."""
        m = manifests.c
        rows = self.conn.execute(
            select(m.id).where(
                m.id > after_id, m.state == ACTIVE,
                ~exists().where(tags.c.manifest_id == m.id),
                ~exists().where(trashed_tags.c.manifest_id == m.id),
                ~exists().where(gc_manifest_reviews.c.manifest_id == m.id))
            .order_by(m.id).limit(limit))
        return list(rows.scalars())

    # ---- invariant: every row is referenced, queued for review, or tombstoned (fsck) ----
    def blobs_page(self, after: str, limit: int) -> list[tuple[str, bool]]:
        """A keyset page of ready blob rows after ``after``: (digest, orphan), where orphan
        means no manifest references it, no repository links it, no review is pending and
        no tombstone exists for it (``committing`` rows are the collector's own sweep)."""
        b = blobs.c
        orphan = ~or_(
            exists().where(manifest_references.c.digest == b.digest, manifest_references.c.kind == "blob"),
            exists().where(repository_blobs.c.digest == b.digest),
            exists().where(gc_blob_reviews.c.digest == b.digest),
            exists().where(gc_tombstones.c.digest == b.digest))
        rows = self.conn.execute(select(b.digest, orphan.label("orphan"))
                                 .where(b.digest > after, b.state != COMMITTING).order_by(b.digest).limit(limit))
        return [(r.digest, bool(r.orphan)) for r in rows]

    def links_page(self, after: tuple[int, str], limit: int) -> list[tuple[tuple[int, str], bool]]:
        """A keyset page of layer links after ``after``: ((repository_id, digest), orphan),
        where orphan means no manifest of the repository references the blob and no review
        of the link is pending."""
        link = repository_blobs.c
        refs = manifest_references.c
        orphan = ~or_(
            exists().where(refs.repository_id == link.repository_id, refs.digest == link.digest, refs.kind == "blob"),
            exists().where(gc_link_reviews.c.repository_id == link.repository_id,
                           gc_link_reviews.c.digest == link.digest))
        rows = self.conn.execute(select(link.repository_id, link.digest, orphan.label("orphan"))
                                 .where(tuple_(link.repository_id, link.digest) > tuple_(*after))
                                 .order_by(link.repository_id, link.digest).limit(limit))
        return [((r.repository_id, r.digest), bool(r.orphan)) for r in rows]

    def repositories_page(self, after: int, limit: int) -> list[tuple[int, bool]]:
        """A keyset page of repositories after ``after``: (id, orphan), where orphan means
        no tag, manifest, layer link or upload, and no review pending."""
        rid = repositories.c.id
        orphan = ~or_(*(exists().where(t.c.repository_id == rid)
                        for t in (tags, manifests, repository_blobs, uploads, gc_repository_reviews)))
        rows = self.conn.execute(select(rid, orphan.label("orphan")).where(rid > after).order_by(rid).limit(limit))
        return [(r.id, bool(r.orphan)) for r in rows]

    # ---- claiming ------------------------------------------------------------
    def claim_due(self, name: str, now: float, limit: int, *, lock: bool = True) -> list[Any]:
        table = QUEUES[name]
        q = select(table).where(table.c.review_after <= now).order_by(table.c.review_after).limit(limit)
        if lock:
            q = q.with_for_update(skip_locked=True)
        return list(self.conn.execute(q))

    def due_work(self, now: float, stale_before: float) -> set[str]:
        """Which queues have due entries, in one cheap query (an idle run asks nothing else)."""
        checks = {name: exists().where(table.c.review_after <= now) for name, table in QUEUES.items()}
        checks["tombstones"] = exists().where(gc_tombstones.c.next_attempt_at <= now)
        checks["uploads"] = exists().where(uploads.c.updated_at < stale_before)
        checks["commits"] = exists().where(blobs.c.state == COMMITTING, blobs.c.created_at < stale_before)
        names = list(checks)
        row = self.conn.execute(select(*[checks[n] for n in names])).one()
        return {n for n, due in zip(names, row) if due}

    def done_many(self, name: str, rows) -> None:
        table = QUEUES[name]
        pk = list(table.primary_key.columns)
        keys = sorted({tuple(getattr(r, c.name) for c in pk) for r in rows})
        if not keys:
            return
        if len(pk) == 1:
            self.conn.execute(delete(table).where(pk[0].in_([k[0] for k in keys])))
        else:
            self.conn.execute(delete(table).where(in_pairs(self.conn, *pk, keys)))

    def backlog(self, now: float) -> dict[str, dict[str, int]]:
        out = {}
        for name, table in QUEUES.items():
            total, due = self.conn.execute(
                select(func.count(), func.coalesce(func.sum(case((table.c.review_after <= now, 1), else_=0)), 0))
            ).one()
            out[name] = {"pending": int(total), "due": int(due)}
        total, due = self.conn.execute(select(func.count(), func.coalesce(func.sum(
            case((gc_tombstones.c.next_attempt_at <= now, 1), else_=0)), 0))).one()
        out["tombstones"] = {"pending": int(total), "due": int(due)}
        return out

    def waiting(self, now: float) -> dict[str, tuple[int, float]]:
        """Per queue: how many entries still wait for their grace, and when the first is due."""
        out = {}
        for name, table in QUEUES.items():
            n, first = self.conn.execute(select(func.count(), func.min(table.c.review_after))
                                         .where(table.c.review_after > now)).one()
            if n:
                out[name] = (int(n), float(first))
        return out

    # ---- checks under lock ---------------------------------------------------
    def lock_blob(self, digest: str):
        """The blob row, locked against concurrent pushes and collectors (None if gone)."""
        return self.conn.execute(_LOCK_BLOB, {"digest": digest}).first()

    def blob_referenced(self, digest: str, ignoring_repositories: set[int] | None = None) -> bool:
        by_manifest = exists().where(manifest_references.c.digest == digest, manifest_references.c.kind == "blob")
        by_link = exists().where(repository_blobs.c.digest == digest)
        if ignoring_repositories:
            by_link = by_link.where(repository_blobs.c.repository_id.not_in(ignoring_repositories))
        return bool(self.conn.execute(select(or_(by_manifest, by_link))).scalar())

    def nonempty_repositories(self, repo_ids) -> set[int]:
        """Those of ``repo_ids`` that still have a tag, a manifest, a layer link or an upload
        (one statement; each check stops at the first row an index finds)."""
        ids = sorted(set(repo_ids))
        if not ids:
            return set()
        rid = repositories.c.id
        used = or_(*(exists().where(t.c.repository_id == rid) for t in (tags, manifests, repository_blobs, uploads)))
        return set(self.conn.execute(select(rid).where(rid.in_(ids), used)).scalars())

    def delete_repository(self, repo_id: int) -> None:
        self.conn.execute(delete(repositories).where(repositories.c.id == repo_id))

    def stale_uploads(self, before: float, limit: int, *, lock: bool = True) -> list[Any]:
        q = (select(uploads.c.id, uploads.c.repository_id, uploads.c.size)
             .where(uploads.c.updated_at < before).order_by(uploads.c.updated_at).limit(limit))
        if lock:
            q = q.with_for_update(skip_locked=True)
        return list(self.conn.execute(q))

    def delete_upload(self, upload_id: str) -> None:
        self.conn.execute(delete(uploads).where(uploads.c.id == upload_id))

    def abandoned_commits(self, before: float, limit: int) -> list[str]:
        """Blob rows stuck in ``committing`` (a push died between its two steps)."""
        return list(self.conn.execute(select(blobs.c.digest).where(
            blobs.c.state == COMMITTING, blobs.c.created_at < before).limit(limit)).scalars())

    # ---- tombstones ----------------------------------------------------------
    def tombstone_for_digest(self, digest: str) -> bool:
        return bool(self.conn.execute(select(exists().where(gc_tombstones.c.digest == digest))).scalar())

    def cancel_idle_tombstone(self, digest: str, now: float) -> str:
        """For a push that needs ``digest`` again: "none" if no tombstone exists; "cancelled"
        if one existed but no collector was deleting its data (never claimed, waiting for a
        retry, or its lease has expired), so the data is kept; "busy" if a collector holds a
        live lease on it (the push must wait for the delete to finish)."""
        row = self.conn.execute(_TOMBSTONE_OF, {"digest": digest}).first()
        if row is None:
            return "none"
        if row.lease_owner is not None and row.next_attempt_at > now:
            return "busy"
        self.conn.execute(delete(gc_tombstones).where(gc_tombstones.c.key == row.key))
        return "cancelled"

    def claim_tombstones(self, now: float, limit: int, owner: str, lease: float) -> list[Tombstone]:
        rows = list(self.conn.execute(
            select(gc_tombstones.c.key, gc_tombstones.c.kind, gc_tombstones.c.digest, gc_tombstones.c.size,
                   gc_tombstones.c.attempts)
            .where(gc_tombstones.c.next_attempt_at <= now).order_by(gc_tombstones.c.next_attempt_at)
            .limit(limit).with_for_update(skip_locked=True)))
        if rows:
            self.conn.execute(update(gc_tombstones).where(gc_tombstones.c.key.in_([r.key for r in rows]))
                              .values(next_attempt_at=now + lease, lease_owner=owner))
        return [Tombstone(r.key, r.kind, r.digest, r.size, r.attempts) for r in rows]

    def release_leases_of_dead(self, host: str, alive, now: float) -> int:
        """Leases on tombstones held by processes of this host that no longer exist are
        released at once (other hosts' leases simply expire)."""
        rows = self.conn.execute(select(gc_tombstones.c.key, gc_tombstones.c.lease_owner).where(
            gc_tombstones.c.lease_owner.like(f"{host}:%"), gc_tombstones.c.next_attempt_at > now))
        dead = [r.key for r in rows if not alive(r.lease_owner)]
        if dead:
            self.conn.execute(update(gc_tombstones).where(gc_tombstones.c.key.in_(dead))
                              .values(lease_owner=None, next_attempt_at=now))
        return len(dead)

    def pending_tombstones(self, limit: int) -> list[Tombstone]:
        rows = self.conn.execute(select(gc_tombstones.c.key, gc_tombstones.c.kind, gc_tombstones.c.digest,
                                        gc_tombstones.c.size, gc_tombstones.c.attempts).limit(limit))
        return [Tombstone(r.key, r.kind, r.digest, r.size, r.attempts) for r in rows]

    def drop_tombstones(self, keys: list[str], chunk: int = 500) -> None:
        for i in range(0, len(keys), chunk):
            self.conn.execute(delete(gc_tombstones).where(gc_tombstones.c.key.in_(keys[i:i + chunk])))

    def tombstone_failed(self, key: str, error: str, retry_at: float) -> None:
        self.conn.execute(update(gc_tombstones).where(gc_tombstones.c.key == key).values(
            attempts=gc_tombstones.c.attempts + 1, last_error=error[:2000], next_attempt_at=retry_at,
            lease_owner=None))

    def tombstone_keys(self, keys: list[str]) -> set[str]:
        if not keys:
            return set()
        return set(self.conn.execute(select(gc_tombstones.c.key).where(gc_tombstones.c.key.in_(keys))).scalars())

    # ---- run history ------------------------------------------------------------
    def record_run(self, job: str, started: float, finished: float, dry_run: bool, host: str,
                   report: dict, keep: int = 500) -> None:
        """Record a run; only the newest ``keep`` runs of each job are kept, so a daemon
        that runs for weeks does not grow the table."""
        self.conn.execute(gc_runs.insert().values(job=job, started_at=started, finished_at=finished,
                                                  dry_run=int(dry_run), host=host, report=json.dumps(report)))
        cutoff = self.conn.execute(select(gc_runs.c.id).where(gc_runs.c.job == job)
                                   .order_by(gc_runs.c.id.desc()).offset(keep).limit(1)).scalar()
        if cutoff is not None:
            self.conn.execute(delete(gc_runs).where(gc_runs.c.job == job, gc_runs.c.id <= cutoff))

    def recent_runs(self, job: str, limit: int = 10) -> list[dict]:
        rows = self.conn.execute(select(gc_runs).where(gc_runs.c.job == job)
                                 .order_by(gc_runs.c.started_at.desc()).limit(limit))
        return [{"id": r.id, "job": r.job, "started_at": r.started_at, "finished_at": r.finished_at,
                 "dry_run": bool(r.dry_run), "host": r.host, "report": json.loads(r.report)} for r in rows]
