"""ReviewQueues: the reclamation pipeline's review queues (blobs, layer links, manifests, repositories).

Enqueueing happens in the transaction that removed a reference. Re-enqueueing an entry keeps the
later ``review_after`` of the two: a new reason to wait is never shortened.

``claim_due`` is the one queue-claiming function: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
several collectors share a queue and none takes an entry twice; on SQLite the collector's write
transaction is exclusive, which gives the same.
"""

from __future__ import annotations

import json
from collections import namedtuple
from typing import Any

from sqlalchemy import (
    Connection,
    Table,
    bindparam,
    case,
    delete,
    exists,
    func,
    select,
    tuple_,
    update,
)

from dockyard.meta.db import (
    cached_statement,
    dialect_insert,
    driver_execute,
    in_pairs,
    on_driver,
)
from dockyard.meta.schema import (
    ACTIVE,
    COMMITTING,
    blobs,
    gc_blob_reviews,
    gc_link_reviews,
    gc_manifest_reviews,
    gc_repository_reviews,
    gc_tombstones,
    manifests,
    tags,
    trashed_tags,
    uploads,
)

QUEUES = {
    "manifests": gc_manifest_reviews,
    "links": gc_link_reviews,
    "blobs": gc_blob_reviews,
    "repositories": gc_repository_reviews,
}



def _upsert_later(conn: Connection, table: Table, keys: list[str], rows: list[dict]) -> None:
    if not rows:
        return
    dialect = conn.dialect.name

    def build():
        stmt = dialect_insert(dialect, table)
        if dialect == "postgresql":
            later = func.greatest(table.c.review_after, stmt.excluded.review_after)
        else:
            later = func.max(table.c.review_after, stmt.excluded.review_after)
        return stmt.on_conflict_do_update(index_elements=keys, set_={"review_after": later})

    conn.execute(cached_statement(("upsert_later", dialect, table, tuple(keys)), build), rows)


# every blob commit's link review, on SQLite's driver (``driver_execute``): :func:`_upsert_later`'s
# statement for the layer-link queue, as SQL text
_SQLITE_UPSERT_LINK = (
    "INSERT INTO gc_link_reviews (repository_id, digest, review_after, reason) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (repository_id, digest) DO UPDATE SET review_after = max(gc_link_reviews.review_after, "
    "excluded.review_after)")


# SQLite: the collector's statements as SQL text, run on the driver's connection
# (driver_execute). A queue's due entries are picked by rowid: a row-value IN over the
# composite key of the link queue is searched by its first column only.
_ENTRY = {name: namedtuple(f"{name}_review", [c.name for c in table.c]) for name, table in QUEUES.items()}
_TAKE_DUE_SQLITE = {
    name: (f"DELETE FROM {table.name} WHERE rowid IN (SELECT rowid FROM {table.name} WHERE review_after <= ? "
           f"ORDER BY review_after LIMIT ?) RETURNING {', '.join(c.name for c in table.c)}")
    for name, table in QUEUES.items()}
_BLOBS_DUE_AFTER_SQLITE = ("SELECT digest FROM gc_blob_reviews WHERE digest IN (SELECT value FROM json_each(?)) "
                           "AND review_after > ?")

_DUE_NAMES = (*QUEUES, "tombstones", "uploads", "commits")
_BLOBS_DUE_AFTER = select(gc_blob_reviews.c.digest).where(
    gc_blob_reviews.c.digest.in_(bindparam("digests", expanding=True)), gc_blob_reviews.c.review_after > bindparam("after"))


def _due_work(stale_uploads: bool):
    now, stale = bindparam("now"), bindparam("stale")
    checks = [exists().where(table.c.review_after <= now) for table in QUEUES.values()]
    checks.append(exists().where(gc_tombstones.c.next_attempt_at <= now))
    if stale_uploads:
        checks.append(exists().where(uploads.c.updated_at < stale))
        checks.append(exists().where(blobs.c.state == COMMITTING, blobs.c.created_at < stale))
    return select(*checks)


class ReviewQueues:
    """The four review queues: enqueue, claim what is due, report the backlog."""

    def __init__(self, conn: Connection):
        self.conn = conn

    def add_blobs(self, digests, when: float, reason: str) -> None:
        _upsert_later(self.conn, gc_blob_reviews, ["digest"],
                      [{"digest": d, "review_after": when, "reason": reason} for d in sorted(set(digests))])

    def add_links(self, repo_id: int, digests, when: float, reason: str) -> None:
        self.add_link_pairs([(repo_id, d) for d in digests], when, reason)

    def add_link_pairs(self, pairs, when: float, reason: str) -> None:
        pairs = sorted(set(pairs))
        if len(pairs) == 1 and on_driver(self.conn):  # a blob commit's one link
            driver_execute(self.conn, _SQLITE_UPSERT_LINK, (*pairs[0], when, reason))
            return
        _upsert_later(self.conn, gc_link_reviews, ["repository_id", "digest"],
                      [{"repository_id": r, "digest": d, "review_after": when, "reason": reason}
                       for r, d in sorted(set(pairs))])

    def add_manifests(self, manifest_ids, when: float, reason: str) -> None:
        _upsert_later(self.conn, gc_manifest_reviews, ["manifest_id"],
                      [{"manifest_id": i, "review_after": when, "reason": reason} for i in sorted(set(manifest_ids))])

    def add_repositories(self, repo_ids, when: float) -> None:
        _upsert_later(self.conn, gc_repository_reviews, ["repository_id"],
                      [{"repository_id": r, "review_after": when} for r in sorted(set(repo_ids))])

    def blobs_due_after(self, digests, after: float) -> set[str]:
        """Those of ``digests`` with a pending blob review due after ``after``."""
        if not digests:
            return set()
        if on_driver(self.conn):
            rows = driver_execute(self.conn, _BLOBS_DUE_AFTER_SQLITE, (json.dumps(sorted(set(digests))), after))
            return {r[0] for r in rows}
        return set(self.conn.execute(_BLOBS_DUE_AFTER, {"digests": sorted(set(digests)), "after": after}).scalars())

    def postpone_link(self, repo_id: int, digest: str, until: float) -> bool:
        """Push a pending link review back (a client just relied on the link). False if none is pending."""
        res = self.conn.execute(
            update(gc_link_reviews)
            .where(gc_link_reviews.c.repository_id == repo_id, gc_link_reviews.c.digest == digest,
                   gc_link_reviews.c.review_after < until)
            .values(review_after=until))
        return res.rowcount > 0

    def claim_due(self, name: str, now: float, limit: int, *, lock: bool = True) -> list[Any]:
        table = QUEUES[name]
        q = select(table).where(table.c.review_after <= now).order_by(table.c.review_after).limit(limit)
        if lock:
            q = q.with_for_update(skip_locked=True)
        return list(self.conn.execute(q))

    def take_due(self, name: str, now: float, limit: int) -> list[Any]:
        """Claim up to ``limit`` due entries and remove them from the queue, in one statement
        (``DELETE .. RETURNING``; on PostgreSQL the entries are picked ``FOR UPDATE SKIP
        LOCKED``, so concurrent collectors take disjoint sets): what :meth:`claim_due` then
        :meth:`done` do, for the collector's write transaction. In no particular order.
        Each entry has its queue's columns as attributes."""
        dialect = self.conn.dialect.name
        if on_driver(self.conn):
            entry = _ENTRY[name]
            return [entry(*r) for r in driver_execute(self.conn, _TAKE_DUE_SQLITE[name], (now, limit))]

        def build():
            table = QUEUES[name]
            pk = list(table.primary_key.columns)
            due = (select(*pk).where(table.c.review_after <= bindparam("now"))
                   .order_by(table.c.review_after).limit(bindparam("limit")))
            if dialect == "postgresql":
                due = due.with_for_update(skip_locked=True)
            picked = pk[0].in_(due) if len(pk) == 1 else tuple_(*pk).in_(due)
            return delete(table).where(picked).returning(*table.c)

        stmt = cached_statement(("take_due", dialect, name), build)
        return self.conn.execute(stmt, {"now": now, "limit": limit}).all()

    def due_work(self, now: float, stale_before: float, *, uploads: bool = True) -> set[str]:
        """Which queues have due entries, in one cheap query (an idle run asks nothing else).
        ``uploads=False`` leaves out stale uploads and abandoned commits (that check reads
        every blob row: there is no index on a blob's state)."""
        names = _DUE_NAMES if uploads else _DUE_NAMES[:-2]
        stmt = cached_statement(("due_work", uploads), lambda: _due_work(uploads))
        row = self.conn.execute(stmt, {"now": now, "stale": stale_before}).one()
        return {n for n, due in zip(names, row) if due}

    def done(self, name: str, rows) -> None:
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
