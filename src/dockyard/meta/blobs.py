"""BlobStore: blob rows and the repository links ("layer links")."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable

from sqlalchemy import Connection, bindparam, delete, exists, select, tuple_, update

from dockyard import faults
from dockyard.meta.db import (
    cached_statement,
    driver_execute,
    insert_ignore,
    on_driver,
    pairs_in,
    pairs_value,
)
from dockyard.meta.schema import (
    COMMITTING,
    READY,
    blobs,
    gc_link_reviews,
    manifest_references,
    repositories,
    repository_blobs,
)


@dataclass(frozen=True, slots=True)
class Blob:
    digest: str
    size: int


# hot-path statements, built once (no construct or cache key to build per request)
_MARK_READY = update(blobs).where(blobs.c.digest == bindparam("d")).values(state=READY)
_LINKED_BY_NAME = (
    select(blobs.c.size, repositories.c.id, gc_link_reviews.c.review_after)
    .select_from(repositories)
    .join(repository_blobs, repository_blobs.c.repository_id == repositories.c.id)
    .join(blobs, blobs.c.digest == repository_blobs.c.digest)
    .outerjoin(gc_link_reviews, (gc_link_reviews.c.repository_id == repositories.c.id)
               & (gc_link_reviews.c.digest == blobs.c.digest))
    .where(repositories.c.name == bindparam("name"), repositories.c.deleted_at.is_(None),
           repository_blobs.c.digest == bindparam("digest"), blobs.c.state == READY))


# the push path's lock, built once
_LOCK_BLOB = (select(blobs.c.digest, blobs.c.size, blobs.c.state, blobs.c.created_at)
              .where(blobs.c.digest == bindparam("digest")).with_for_update())


# the push path's statements as SQL text for SQLite's driver (``driver_execute``: no SQLAlchemy
# execute inside the writer's turn; SQLite has no row locks, its write transaction is the lock)
_SQLITE_LOCK_BLOB = "SELECT digest, size, state, created_at FROM blobs WHERE digest = ?"
_SQLITE_ADD = ("INSERT INTO blobs (digest, size, created_at, state) VALUES (?, ?, ?, ?) "
               "ON CONFLICT DO NOTHING RETURNING digest")
_SQLITE_MARK_READY = f"UPDATE blobs SET state = '{READY}' WHERE digest = ?"
_SQLITE_LINK = ("INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING")
_SQLITE_LINKED_AMONG = (
    f"SELECT blobs.digest, blobs.size FROM blobs JOIN repository_blobs ON repository_blobs.digest = blobs.digest "
    f"WHERE repository_blobs.repository_id = ? AND blobs.state = '{READY}' AND blobs.digest IN ({{}})")


# the collector's statements over a batch of digests (an expanding parameter), built once
_DIGESTS = bindparam("digests", expanding=True)
_ROWS = (select(blobs.c.digest, blobs.c.size, blobs.c.state, blobs.c.created_at)
         .where(blobs.c.digest.in_(_DIGESTS)).order_by(blobs.c.digest))
_LOCK_MANY = {False: _ROWS, True: _ROWS.with_for_update()}
_DELETE_ROWS = delete(blobs).where(blobs.c.digest.in_(_DIGESTS))
_DELETE_LINKS = delete(repository_blobs).where(
    tuple_(repository_blobs.c.repository_id, repository_blobs.c.digest).in_(bindparam("pairs", expanding=True)))


def _referenced(ignoring: bool):
    # one index probe per digest (EXISTS): a base layer that 30,000 manifests share is one
    # probe, where a UNION of the matching rows read and sorted all 30,000 of them
    d = blobs.c.digest
    by_manifest = exists().where(manifest_references.c.digest == d, manifest_references.c.kind == "blob")
    link = exists().where(repository_blobs.c.digest == d)
    if ignoring:
        link = link.where(repository_blobs.c.repository_id.not_in(bindparam("ignoring", expanding=True)))
    return select(d).where(d.in_(_DIGESTS), by_manifest | link)


_REFERENCED, _REFERENCED_IGNORING = _referenced(False), _referenced(True)

# SQLite: the collector's statements as SQL text on the driver's connection (driver_execute),
# a batch of digests as one JSON array, a batch of (repository, digest) pairs as one JSON
# array joined to the key (a row-value IN list is searched by its first column only: every
# link of the repository read per pair)
_IN_DIGESTS = "IN (SELECT value FROM json_each(?))"
_ROWS_SQLITE = f"SELECT digest, size, state, created_at FROM blobs WHERE digest {_IN_DIGESTS} ORDER BY digest"
_REFERENCED_SQLITE = (f"SELECT b.digest FROM blobs b WHERE b.digest {_IN_DIGESTS} AND (EXISTS (SELECT 1 FROM "
                      "manifest_references r WHERE r.digest = b.digest AND r.kind = 'blob') OR EXISTS (SELECT 1 "
                      "FROM repository_blobs l WHERE l.digest = b.digest))")
_DELETE_ROWS_SQLITE = f"DELETE FROM blobs WHERE digest {_IN_DIGESTS}"
# (json_extract, not ->>, which needs SQLite 3.38: the system SQLite of some distributions is older)
_PAIR_KEY = "l.repository_id = json_extract(j.value, '$[0]') AND l.digest = json_extract(j.value, '$[1]')"
_LINKS_OF_SQLITE = ("SELECT l.repository_id, l.digest, l.created_at FROM json_each(?) j JOIN repository_blobs l "
                    f"ON {_PAIR_KEY}")
_DELETE_LINKS_SQLITE = ("DELETE FROM repository_blobs WHERE rowid IN (SELECT l.rowid FROM json_each(?) j JOIN "
                        f"repository_blobs l ON {_PAIR_KEY})")


@dataclass(frozen=True, slots=True)
class BlobRow:
    """A blob row as the collector and the commit see it under lock."""
    digest: str
    size: int
    state: str
    created_at: float


class BlobStore:
    def __init__(self, conn: Connection):
        self.conn = conn
        self.raw = on_driver(conn)  # fixed hot statements on SQLite's driver

    def get_linked(self, repo_id: int, digest: str) -> Blob | None:
        row = self.conn.execute(
            select(blobs.c.size)
            .join(repository_blobs, repository_blobs.c.digest == blobs.c.digest)
            .where(repository_blobs.c.repository_id == repo_id, blobs.c.digest == digest, blobs.c.state == READY)
        ).first()
        return Blob(digest, row.size) if row else None

    def get_linked_anywhere(self, digest: str) -> Blob | None:
        """The blob if any live repository links it."""
        from dockyard.meta.schema import repositories

        row = self.conn.execute(
            select(blobs.c.size)
            .join(repository_blobs, repository_blobs.c.digest == blobs.c.digest)
            .join(repositories, repositories.c.id == repository_blobs.c.repository_id)
            .where(blobs.c.digest == digest, blobs.c.state == READY, repositories.c.deleted_at.is_(None))
            .limit(1)
        ).first()
        return Blob(digest, row.size) if row else None

    def linked_among(self, repo_id: int, digests: Iterable[str]) -> dict[str, int]:
        """digest -> size for those of ``digests`` linked to the repository and ready.

        The blob rows are share-locked (in digest order) until the transaction ends: the
        collector takes the same rows exclusively before it removes a link or a blob, so a
        manifest that passes this check cannot lose its blobs before it commits. The links
        are read by a second statement, after the locks are held: on PostgreSQL a statement
        that waited for a row lock re-checks only the rows it locked, so links read in the
        same statement would be those of before the collector's commit (a push answered 201
        whose links were just deleted).
        """
        wanted = sorted(set(digests))
        if not wanted:
            return {}
        if self.raw:  # no row locks: the write transaction holds the database
            faults.point("manifests.blobs_locked")
            sql = _SQLITE_LINKED_AMONG.format(", ".join("?" * len(wanted)))
            return dict(driver_execute(self.conn, sql, (repo_id, *wanted)).fetchall())
        self.conn.execute(select(blobs.c.digest).where(blobs.c.digest.in_(wanted)).order_by(blobs.c.digest)
                          .with_for_update(read=True))
        faults.point("manifests.blobs_locked")
        rows = self.conn.execute(
            select(blobs.c.digest, blobs.c.size)
            .join(repository_blobs, repository_blobs.c.digest == blobs.c.digest)
            .where(repository_blobs.c.repository_id == repo_id, blobs.c.digest.in_(wanted),
                   blobs.c.state == READY)
        )
        return {r.digest: r.size for r in rows}

    def add(self, digest: str, size: int, now: float, state: str = READY) -> bool:
        """Insert the row unless one exists; True if this call inserted it."""
        if self.raw:
            return bool(driver_execute(self.conn, _SQLITE_ADD, (digest, size, now, state)).fetchall())
        return bool(insert_ignore(self.conn, blobs, {"digest": digest, "size": size, "created_at": now,
                                                     "state": state}))

    def existing(self, digests) -> set[str]:
        """Those of ``digests`` that have a row (any state)."""
        wanted = sorted(set(digests))
        if not wanted:
            return set()
        return set(self.conn.execute(select(blobs.c.digest).where(blobs.c.digest.in_(wanted))).scalars())

    def ready_page(self, after: str, limit: int) -> list[Blob]:
        """Ready blobs in digest order, after ``after`` (a keyset page, for fsck)."""
        rows = self.conn.execute(select(blobs.c.digest, blobs.c.size).where(
            blobs.c.state == READY, blobs.c.digest > after).order_by(blobs.c.digest).limit(limit))
        return [Blob(r.digest, r.size) for r in rows]

    def recommit(self, digest: str, size: int) -> None:
        """A row whose object is not known good (left ``committing``, or recorded with another
        size) is committed again from a verified upload."""
        self.conn.execute(update(blobs).where(blobs.c.digest == digest).values(size=size, state=COMMITTING))

    def mark_ready(self, digest: str) -> None:
        if self.raw:
            driver_execute(self.conn, _SQLITE_MARK_READY, (digest,))
            return
        self.conn.execute(_MARK_READY, {"d": digest})

    def mark_ready_many(self, digests: Iterable[str]) -> None:
        """:meth:`mark_ready` for several blobs (in digest order: the order rows are locked in)."""
        wanted = sorted(set(digests))
        if wanted:
            self.conn.execute(_MARK_READY, [{"d": d} for d in wanted])

    def link(self, repo_id: int, digests: Iterable[str], now: float, *, locked: bool = False) -> None:
        """Link ``digests`` to the repository. ``locked``: this transaction already holds the
        blob rows (locked for update, or inserted by it), so the key-share lock is not taken again."""
        wanted = sorted(set(digests))
        if not wanted:
            return
        if self.raw:  # no row locks to take (the write transaction holds the database)
            for d in wanted:
                driver_execute(self.conn, _SQLITE_LINK, (repo_id, d, now))
            return
        # Take the lock the foreign-key check will take (KEY SHARE on the blob rows), in digest
        # order, before the link's index entry exists: taken after it (by the check), a
        # concurrent push holding the blob row and inserting the same link deadlocked with us.
        if not locked:
            self.conn.execute(select(blobs.c.digest).where(blobs.c.digest.in_(wanted)).order_by(blobs.c.digest)
                              .with_for_update(read=True, key_share=True))
        insert_ignore(self.conn, repository_blobs,
                      [{"repository_id": repo_id, "digest": d, "created_at": now} for d in wanted])

    def unlink(self, repo_id: int, digest: str) -> bool:
        res = self.conn.execute(
            delete(repository_blobs).where(
                repository_blobs.c.repository_id == repo_id, repository_blobs.c.digest == digest
            )
        )
        return res.rowcount > 0

    def lock_many(self, digests, *, lock: bool = True) -> dict[str, BlobRow]:
        """Blob rows, locked in digest order (a fixed order: no deadlock between collectors)."""
        wanted = sorted(set(digests))
        if not wanted:
            return {}
        if on_driver(self.conn):  # (its write transaction holds the database)
            return {r[0]: BlobRow(*r) for r in driver_execute(self.conn, _ROWS_SQLITE, (json.dumps(wanted),))}
        return {r[0]: BlobRow(*r) for r in self.conn.execute(_LOCK_MANY[lock], {"digests": wanted}).all()}

    def lock(self, digest: str) -> BlobRow | None:
        """The blob row, locked against concurrent pushes and collectors (None if gone): the
        push path's one-digest form of :meth:`lock_many`, with its statement built once."""
        if self.raw:
            found = driver_execute(self.conn, _SQLITE_LOCK_BLOB, (digest,)).fetchall()
            return BlobRow(*found[0]) if found else None
        row = self.conn.execute(_LOCK_BLOB, {"digest": digest}).first()
        return BlobRow(*row) if row else None

    def referenced(self, digests, *, ignoring_repositories: set[int] | None = None) -> set[str]:
        """Those of ``digests`` (blob rows) that a manifest references as a layer or a
        repository links (links of ``ignoring_repositories`` not counted: a dry run's "would
        be unlinked"). A digest with no blob row is never returned (every caller holds the row)."""
        wanted = sorted(set(digests))
        if not wanted:
            return set()
        if ignoring_repositories:
            return set(self.conn.execute(_REFERENCED_IGNORING, {"digests": wanted,
                                                                "ignoring": sorted(ignoring_repositories)}).scalars())
        if on_driver(self.conn):
            return {r[0] for r in driver_execute(self.conn, _REFERENCED_SQLITE, (json.dumps(wanted),))}
        return set(self.conn.execute(_REFERENCED, {"digests": wanted}).scalars())

    def delete_rows(self, digests) -> None:
        wanted = sorted(set(digests))
        if wanted and on_driver(self.conn):
            driver_execute(self.conn, _DELETE_ROWS_SQLITE, (json.dumps(wanted),))
        elif wanted:
            self.conn.execute(_DELETE_ROWS, {"digests": wanted})

    def abandoned_commits(self, before: float, limit: int) -> list[str]:
        """Blob rows stuck in ``committing`` (a push died between its two steps)."""
        return list(self.conn.execute(select(blobs.c.digest).where(
            blobs.c.state == COMMITTING, blobs.c.created_at < before).limit(limit)).scalars())

    def links_of(self, pairs) -> dict[tuple[int, str], float]:
        pairs = sorted(set(pairs))
        if not pairs:
            return {}
        dialect = self.conn.dialect.name
        if on_driver(self.conn):
            return {(r[0], r[1]): r[2] for r in driver_execute(self.conn, _LINKS_OF_SQLITE, (json.dumps(pairs),))}
        stmt = cached_statement(("links_of", dialect), lambda: select(
            repository_blobs.c.repository_id, repository_blobs.c.digest, repository_blobs.c.created_at)
            .where(pairs_in(dialect, repository_blobs.c.repository_id, repository_blobs.c.digest, "pairs")))
        return {(r[0], r[1]): r[2] for r in self.conn.execute(stmt, {"pairs": pairs_value(dialect, pairs)}).all()}

    def delete_links(self, pairs) -> None:
        pairs = sorted(set(pairs))
        if not pairs:
            return
        if on_driver(self.conn):
            # the pairs joined to the key (one statement): SQLite searches a row-value IN list
            # by its first column only, reading every link of each repository
            driver_execute(self.conn, _DELETE_LINKS_SQLITE, (json.dumps(pairs),))
        else:
            self.conn.execute(_DELETE_LINKS, {"pairs": pairs})


@dataclass(frozen=True, slots=True)
class LinkedBlob:
    blob: Blob
    repository_id: int
    review_after: float | None
    """When a pending review of this layer link is due (None: no review pending)."""


def get_linked_by_name(conn: Connection, repo_name: str, digest: str) -> LinkedBlob | None:
    """The blob if ``repo_name`` (not deleted) links it: one query, for the HEAD/GET hot path."""
    row = conn.execute(_LINKED_BY_NAME, {"name": repo_name, "digest": digest}).first()
    return LinkedBlob(Blob(digest, row.size), row.id, row.review_after) if row else None
