"""ManifestStore: manifests, what they reference, and their state (active / pending_delete)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any, Iterable

from sqlalchemy import Connection, bindparam, delete, select, update

from dockyard.meta.db import (
    cached_statement,
    driver_execute,
    in_pairs,
    insert_ignore,
    on_driver,
    pairs_in,
    pairs_value,
)
from dockyard.meta.schema import (
    ACTIVE,
    PENDING_DELETE,
    gc_manifest_reviews,
    manifest_references,
    repositories,
    tag_history,
    tags,
    trashed_tags,
)
from dockyard.meta.schema import manifests as t
from dockyard.oci.manifest import ParsedManifest

# SQLite, the collector's check of a batch of (repository, digest) pairs, on the driver's
# connection (driver_execute): the pairs (one JSON array) joined to the index on
# (repository, digest, kind); a row-value IN list is searched by its first column only
# (every reference of the repository read per pair)
_REFERENCED_AMONG_SQLITE = (
    "SELECT DISTINCT r.repository_id, r.digest FROM json_each(?) j JOIN manifest_references r "
    "ON r.repository_id = json_extract(j.value, '$[0]') AND r.digest = json_extract(j.value, '$[1]') "
    "AND r.kind = ?")


@dataclass(frozen=True, slots=True)
class Manifest:
    id: int
    repository_id: int
    digest: str
    media_type: str
    size: int
    state: str
    artifact_type: str | None = None
    subject_digest: str | None = None
    payload: bytes | None = None


_COLUMNS = (t.c.id, t.c.repository_id, t.c.digest, t.c.media_type, t.c.size, t.c.state,
            t.c.artifact_type, t.c.subject_digest)


def _row(row, payload: bool = False) -> Manifest:
    return Manifest(row.id, row.repository_id, row.digest, row.media_type, row.size, row.state,
                    row.artifact_type, row.subject_digest, row.payload if payload else None)


def _lookup_statements():
    """The pull hot path's two queries, built once (SQLAlchemy then skips building the
    construct and its cache key on every request)."""
    base = (select(*_COLUMNS, t.c.payload).select_from(repositories)
            .join(t, t.c.repository_id == repositories.c.id)
            .where(repositories.c.name == bindparam("name"), repositories.c.deleted_at.is_(None),
                   t.c.state == ACTIVE))
    by_tag = base.join(tags, (tags.c.repository_id == repositories.c.id) & (tags.c.manifest_id == t.c.id)).where(
        tags.c.name == bindparam("reference"))
    return by_tag, base.where(t.c.digest == bindparam("reference"))


_LOOKUP_BY_TAG, _LOOKUP_BY_DIGEST = _lookup_statements()


@dataclass(frozen=True, slots=True)
class Referrer:
    digest: str
    media_type: str
    size: int
    artifact_type: str | None
    annotations: dict[str, str] | None


@dataclass(frozen=True, slots=True)
class PurgeTarget:
    id: int
    repository_id: int
    digest: str


@functools.cache
def _purge_statements() -> dict:
    """The statements of :meth:`ManifestStore.delete_rows`, over an expanding ``ids``, built once."""
    ids = bindparam("ids", expanding=True)
    refs = manifest_references.c
    return {
        "refs": select(refs.manifest_id, refs.kind, refs.digest).where(refs.manifest_id.in_(ids)),
        "tagged": (select(tags.c.repository_id, tags.c.name, t.c.digest).join(t, t.c.id == tags.c.manifest_id)
                   .where(tags.c.manifest_id.in_(ids))),
        "delete_tags": delete(tags).where(tags.c.manifest_id.in_(ids)),
        "delete_trashed": delete(trashed_tags).where(trashed_tags.c.manifest_id.in_(ids)),
        "delete_refs": delete(manifest_references).where(refs.manifest_id.in_(ids)),
        "delete_reviews": delete(gc_manifest_reviews).where(gc_manifest_reviews.c.manifest_id.in_(ids)),
        "delete_manifests": delete(t).where(t.c.id.in_(ids)),
    }


def _group_by_value(mapping: dict) -> dict:
    out: dict = {}
    for k, v in mapping.items():
        out.setdefault(v, []).append(k)
    return out


@functools.cache
def _get_statement(payload: bool, any_state: bool, lock: bool):
    """:meth:`ManifestStore.get`'s statement for these options, built once."""
    q = (select(*_COLUMNS, *((t.c.payload,) if payload else ()))
         .where(t.c.repository_id == bindparam("repo_id"), t.c.digest == bindparam("digest")))
    if not any_state:
        q = q.where(t.c.state == ACTIVE)
    return q.with_for_update() if lock else q


# the manifest push's statements as SQL text for SQLite's driver (``driver_execute``: no
# SQLAlchemy execute inside the writer's turn; SQLite has no row locks, the write transaction
# holds the database)
_SQLITE_GET = ("SELECT id, repository_id, digest, media_type, size, state, artifact_type, subject_digest "
               "FROM manifests WHERE repository_id = ? AND digest = ?")
_SQLITE_GET_ACTIVE = f"{_SQLITE_GET} AND state = '{ACTIVE}'"
_SQLITE_INSERT = ("INSERT INTO manifests (repository_id, digest, media_type, artifact_type, size, payload, "
                  "subject_digest, annotations, state, created_at, pushed_at) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id")
_INSERTED = ("repository_id", "digest", "media_type", "artifact_type", "size", "payload", "subject_digest",
             "annotations", "state", "created_at", "pushed_at")
_SQLITE_REFERENCE = "INSERT INTO manifest_references (manifest_id, kind, digest, repository_id) VALUES (?, ?, ?, ?)"


class ManifestStore:
    def __init__(self, conn: Connection):
        self.conn = conn
        self.raw = on_driver(conn)  # fixed hot statements on SQLite's driver

    def get(self, repo_id: int, digest: str, *, payload: bool = False, any_state: bool = False,
            lock: bool = False) -> Manifest | None:
        """The manifest; with ``lock``, locked for update until the transaction ends (a push
        and a delete of the same manifest serialise on it)."""
        if self.raw and not payload:
            found = driver_execute(self.conn, _SQLITE_GET if any_state else _SQLITE_GET_ACTIVE,
                                   (repo_id, digest)).fetchall()
            return Manifest(*found[0]) if found else None
        row = self.conn.execute(_get_statement(payload, any_state, lock), {"repo_id": repo_id, "digest": digest}).first()
        return _row(row, payload) if row else None

    def digest_of(self, manifest_id: int) -> str:
        return self.conn.execute(select(t.c.digest).where(t.c.id == manifest_id)).scalar_one()

    def lookup(self, repo_name: str, *, tag: str | None = None, digest: str | None = None) -> Manifest | None:
        """The active manifest a live repository's tag or digest names, with its payload: one
        query, for the pull hot path."""
        q = _LOOKUP_BY_TAG if tag is not None else _LOOKUP_BY_DIGEST
        row = self.conn.execute(q, {"name": repo_name, "reference": tag if tag is not None else digest}).first()
        return _row(row, True) if row else None

    def active_among(self, repo_id: int, digests: Iterable[str], *, lock: bool = False) -> set[str]:
        """Those of ``digests`` that are active manifests of the repository. With ``lock`` they
        are share-locked (in id order) until the transaction ends: the collector and the
        scrubber lock a manifest for update before they purge it, so an index that passes
        this check cannot lose a child before it commits (a row being purged meanwhile is
        re-checked after the purge commits, and is then missing)."""
        wanted = sorted(set(digests))
        if not wanted:
            return set()
        q = select(t.c.digest).where(t.c.repository_id == repo_id, t.c.digest.in_(wanted), t.c.state == ACTIVE)
        if lock:
            q = q.order_by(t.c.id).with_for_update(read=True)
        return set(self.conn.execute(q).scalars())

    def active_parents(self, repo_id: int, digest: str) -> list[str]:
        """Digests of the active indexes of the repository that list ``digest`` as a child."""
        return sorted(self.conn.execute(
            select(t.c.digest).join(manifest_references, manifest_references.c.manifest_id == t.c.id)
            .where(manifest_references.c.repository_id == repo_id, manifest_references.c.kind == "manifest",
                   manifest_references.c.digest == digest, t.c.state == ACTIVE)).scalars())

    def put(self, repo_id: int, digest: str, parsed: ParsedManifest, payload: bytes,
            now: float) -> tuple[Manifest, bool]:
        """Insert the manifest, or make a pending_delete one active again (locked, so a
        concurrent delete of it runs wholly before or after). Idempotent."""
        existing = self.get(repo_id, digest, any_state=True, lock=True)
        if existing is not None:
            revived = existing.state != ACTIVE
            if revived:
                self.conn.execute(
                    update(t).where(t.c.id == existing.id).values(
                        state=ACTIVE, deleted_at=None, deleted_by=None, scrub_after=None, pushed_at=now
                    )
                )
            return Manifest(existing.id, repo_id, digest, existing.media_type, existing.size, ACTIVE,
                            existing.artifact_type, existing.subject_digest), revived
        values = dict(
            repository_id=repo_id,
            digest=digest,
            media_type=parsed.media_type,
            artifact_type=parsed.artifact_type,
            size=len(payload),
            payload=payload,
            subject_digest=parsed.subject.digest if parsed.subject else None,
            annotations=json.dumps(parsed.annotations) if parsed.annotations else None,
            state=ACTIVE,
            created_at=now,
            pushed_at=now,
        )
        if self.raw:
            inserted = driver_execute(self.conn, _SQLITE_INSERT, tuple(values[c] for c in _INSERTED)).fetchall()
        else:
            inserted = insert_ignore(self.conn, t, values)
        if not inserted:  # a concurrent push of the same manifest won
            got = self.get(repo_id, digest, any_state=True, lock=True)
            assert got is not None
            return got, False
        manifest_id = inserted[0][0]
        refs = {("blob", d.digest) for d in parsed.blobs} | {("manifest", d.digest) for d in parsed.children}
        if refs and self.raw:
            for k, d in sorted(refs):
                driver_execute(self.conn, _SQLITE_REFERENCE, (manifest_id, k, d, repo_id))
        elif refs:
            self.conn.execute(
                manifest_references.insert(),
                [{"manifest_id": manifest_id, "repository_id": repo_id, "kind": k, "digest": d} for k, d in sorted(refs)],
            )
        return Manifest(manifest_id, repo_id, digest, parsed.media_type, len(payload), ACTIVE,
                        parsed.artifact_type, values["subject_digest"]), False

    def referrers(self, repo_id: int, subject: str, artifact_type: str | None = None) -> list[Referrer]:
        q = select(t.c.digest, t.c.media_type, t.c.size, t.c.artifact_type, t.c.annotations).where(
            t.c.repository_id == repo_id, t.c.subject_digest == subject, t.c.state == ACTIVE
        )
        if artifact_type:
            q = q.where(t.c.artifact_type == artifact_type)
        q = q.order_by(t.c.digest)
        return [
            Referrer(r.digest, r.media_type, r.size, r.artifact_type,
                     json.loads(r.annotations) if r.annotations else None)
            for r in self.conn.execute(q)
        ]

    def mark_pending_delete(self, manifest_ids: list[int], now: float, actor: str | None, scrub_after: float) -> int:
        if not manifest_ids:
            return 0
        res = self.conn.execute(
            update(t)
            .where(t.c.id.in_(manifest_ids), t.c.state == ACTIVE)
            .values(state=PENDING_DELETE, deleted_at=now, deleted_by=actor, scrub_after=scrub_after)
        )
        return res.rowcount

    def active(self, repo_id: int) -> list[Manifest]:
        return [_row(r) for r in self.conn.execute(
            select(*_COLUMNS).where(t.c.repository_id == repo_id, t.c.state == ACTIVE))]

    def references(self, manifest_id: int) -> list[tuple[str, str]]:
        rows = self.conn.execute(
            select(manifest_references.c.kind, manifest_references.c.digest).where(
                manifest_references.c.manifest_id == manifest_id)
        )
        return [(r.kind, r.digest) for r in rows]

    def delete_rows(self, targets, now: float, actor: str | None) -> list[tuple[int, str, str]]:
        """Delete the t' rows, references, tags (recorded in tag_history) and trash
        entries; returns their references as (repository_id, kind, digest)."""
        ids = {"ids": [t.id for t in targets]}
        repo_of = {t.id: t.repository_id for t in targets}
        s = _purge_statements()
        refs = [(repo_of[r[0]], r[1], r[2]) for r in self.conn.execute(s["refs"], ids).all()]
        tagged = self.conn.execute(s["tagged"], ids).all()
        if tagged:
            self.conn.execute(s["delete_tags"], ids)
            self.conn.execute(tag_history.insert(), [
                {"repository_id": t.repository_id, "tag": t.name, "manifest_digest": t.digest, "action": "delete",
                 "at": now, "actor": actor} for t in tagged])
        for name in ("delete_trashed", "delete_refs", "delete_reviews", "delete_manifests"):
            self.conn.execute(s[name], ids)
        return refs

    def ids_of(self, pairs: list[tuple[int, str]]) -> list[int]:
        if not pairs:
            return []
        return self._ids_where(t.c.digest, pairs)

    def referrer_ids_of(self, subjects: list[tuple[int, str]]) -> list[int]:
        if not subjects:
            return []
        return self._ids_where(t.c.subject_digest, subjects)

    def _ids_where(self, column, pairs) -> list[int]:
        """Ids of the manifests whose (repository, ``column``) is among ``pairs``."""
        dialect = self.conn.dialect.name
        stmt = cached_statement(("ids_where", dialect, column.name), lambda: select(t.c.id).where(
            pairs_in(dialect, t.c.repository_id, column, "pairs")))
        return self.conn.execute(stmt, {"pairs": pairs_value(dialect, sorted(set(pairs)))}).scalars().all()

    def claim_due_pending(self, now: float, limit: int) -> list[PurgeTarget]:
        """pending_delete images whose scrub time has passed, claimed (SKIP LOCKED)."""
        stmt = cached_statement(("claim_due_pending",), lambda: select(t.c.id, t.c.repository_id, t.c.digest)
                                .where(t.c.state == PENDING_DELETE, t.c.scrub_after <= bindparam("now"))
                                .order_by(t.c.scrub_after).limit(bindparam("limit")).with_for_update(skip_locked=True))
        return [PurgeTarget(*r) for r in self.conn.execute(stmt, {"now": now, "limit": limit}).all()]

    def parents_of(self, pairs) -> dict[tuple[int, str], list[Any]]:
        """For each (repository, digest), the t of that repository (any state) that
        reference it as a child: rows of (id, state, scrub_after)."""
        pairs = sorted(set(pairs))
        if not pairs:
            return {}
        refs = manifest_references.c
        dialect = self.conn.dialect.name
        stmt = cached_statement(("parents_of", dialect), lambda: select(
            refs.repository_id, refs.digest, t.c.id, t.c.state, t.c.scrub_after)
            .join(t, t.c.id == refs.manifest_id)
            .where(refs.kind == "manifest", pairs_in(dialect, refs.repository_id, refs.digest, "pairs")))
        rows = self.conn.execute(stmt, {"pairs": pairs_value(dialect, pairs)}).all()
        out: dict[tuple[int, str], list[Any]] = {}
        for r in rows:
            out.setdefault((r.repository_id, r.digest), []).append(r)
        return out

    def defer_pending(self, scrub_after: dict[int, float]) -> None:
        """Move the scrub time of pending_delete t (claimed by the caller) later."""
        for when, ids in _group_by_value(scrub_after).items():
            self.conn.execute(update(t).where(t.c.id.in_(ids), t.c.state == PENDING_DELETE)
                              .values(scrub_after=when))

    def for_review(self, ids, *, lock: bool = True) -> list[Any]:
        wanted = sorted(set(ids))
        if not wanted:
            return []
        q = (select(t.c.id, t.c.repository_id, t.c.digest, t.c.state,
                    t.c.size, t.c.subject_digest, t.c.pushed_at)
             .where(t.c.id.in_(wanted)).order_by(t.c.id))
        return list(self.conn.execute(q.with_for_update() if lock else q))

    def kept_by_tags(self, ids) -> set[int]:
        """Manifests with a live tag or a tag in the trash (restorable)."""
        wanted = sorted(set(ids))
        if not wanted:
            return set()
        live = select(tags.c.manifest_id).where(tags.c.manifest_id.in_(wanted))
        trashed = select(trashed_tags.c.manifest_id).where(trashed_tags.c.manifest_id.in_(wanted))
        return set(self.conn.execute(live.union(trashed)).scalars())

    def existing(self, pairs) -> set[tuple[int, str]]:
        pairs = sorted(set(pairs))
        if not pairs:
            return set()
        rows = self.conn.execute(select(t.c.repository_id, t.c.digest).where(
            in_pairs(self.conn, t.c.repository_id, t.c.digest, pairs)))
        return {(r.repository_id, r.digest) for r in rows}

    def referenced_among(self, pairs, kind: str) -> set[tuple[int, str]]:
        """Those (repository, digest) pairs that some manifest of that repository (any state:
        pending ones can be restored) references as ``kind``: "blob" (a needed layer link) or
        "manifest" (a child of an index)."""
        pairs = sorted(set(pairs))
        if not pairs:
            return set()
        refs = manifest_references.c
        dialect = self.conn.dialect.name
        if on_driver(self.conn):  # the pairs joined to the index (see _REFERENCED_AMONG_SQLITE)
            rows = driver_execute(self.conn, _REFERENCED_AMONG_SQLITE, (json.dumps(pairs), kind))
            return {(r[0], r[1]) for r in rows}
        stmt = cached_statement(("referenced_among", dialect), lambda: select(refs.repository_id, refs.digest).distinct()
                                .where(refs.kind == bindparam("kind"),
                                       pairs_in(dialect, refs.repository_id, refs.digest, "pairs")))
        return {(r[0], r[1]) for r in self.conn.execute(stmt, {"kind": kind, "pairs": pairs_value(dialect, pairs)}).all()}
