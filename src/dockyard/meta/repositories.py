"""RepositoryStore: repository rows (names, soft deletion)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, delete, exists, or_, select, update

from dockyard.errors import name_unknown
from dockyard.meta.db import driver_execute, insert_ignore, on_driver
from dockyard.meta.schema import (
    manifests,
    repositories,
    repository_blobs,
    tags,
    uploads,
)
from dockyard.meta.schema import repositories as t


@dataclass(frozen=True, slots=True)
class Repository:
    id: int
    name: str
    deleted_at: float | None


_BY_NAME_SHARED = (select(t.c.id, t.c.name, t.c.deleted_at).where(t.c.name == bindparam("name"))
                   .with_for_update(read=True))  # built once: every push runs it
_BY_NAME = select(t.c.id, t.c.name, t.c.deleted_at).where(t.c.name == bindparam("name"))
# both on SQLite's driver (``driver_execute``: every push runs it in the writer's turn; SQLite
# has no row locks, so the shared lock is the write transaction itself)
_SQLITE_BY_NAME = "SELECT id, name, deleted_at FROM repositories WHERE name = ?"


class RepositoryStore:
    def __init__(self, conn: Connection):
        self.conn = conn
        self.raw = on_driver(conn)  # fixed hot statements on SQLite's driver

    def _by_name(self, name: str, stmt) -> Repository | None:
        if self.raw:
            found = driver_execute(self.conn, _SQLITE_BY_NAME, (name,)).fetchall()
            return Repository(*found[0]) if found else None
        row = self.conn.execute(stmt, {"name": name}).first()
        return Repository(row.id, row.name, row.deleted_at) if row else None

    def get(self, name: str, *, include_deleted: bool = False) -> Repository | None:
        row = self._by_name(name, _BY_NAME)
        if row is None or (row.deleted_at is not None and not include_deleted):
            return None
        return row

    def require(self, name: str) -> Repository:
        """The live repository, or NAME_UNKNOWN."""
        repo = self.get(name)
        if repo is None:
            raise name_unknown(name)
        return repo

    def by_ids(self, repo_ids, *, lock: bool = False) -> dict[int, Repository]:
        """The repositories that exist among ``repo_ids``; with ``lock``, locked (in id order)."""
        q = (select(t.c.id, t.c.name, t.c.deleted_at).where(t.c.id.in_(sorted(set(repo_ids))))
             .order_by(t.c.id))
        rows = self.conn.execute(q.with_for_update() if lock else q)
        return {r.id: Repository(r.id, r.name, r.deleted_at) for r in rows}

    def lock(self, repo_id: int) -> Repository | None:
        """The live repository, locked for update until the transaction ends (None if it was
        deleted meanwhile)."""
        row = self.conn.execute(select(t.c.id, t.c.name, t.c.deleted_at).where(t.c.id == repo_id)
                                .with_for_update()).first()
        if row is None or row.deleted_at is not None:
            return None
        return Repository(row.id, row.name, row.deleted_at)

    def ensure(self, name: str, now: float) -> Repository:
        """The repository, created or revived as needed, and share-locked for this transaction
        so the collector cannot remove it while the caller adds to it."""
        repo = self._by_name(name, _BY_NAME_SHARED)  # nearly always there: one statement
        for _ in range(5):
            if repo is not None:
                break
            insert_ignore(self.conn, t, {"name": name, "created_at": now})
            repo = self._by_name(name, _BY_NAME_SHARED)
        else:  # pragma: no cover - removed five times in a row under us
            raise RuntimeError(f"repository {name} keeps disappearing")
        if repo.deleted_at is not None:
            self.conn.execute(update(t).where(t.c.id == repo.id).values(deleted_at=None))
            repo = Repository(repo.id, repo.name, None)
        return repo

    def page(self, last: str | None, limit: int | None) -> list[str]:
        q = select(t.c.name).where(t.c.deleted_at.is_(None)).order_by(t.c.name)
        if last:
            q = q.where(t.c.name > last)
        if limit is not None:
            q = q.limit(limit)
        return list(self.conn.execute(q).scalars())

    def mark_deleted(self, repo_id: int, now: float) -> None:
        self.conn.execute(update(t).where(t.c.id == repo_id).values(deleted_at=now))

    def nonempty(self, repo_ids) -> set[int]:
        """Those of ``repo_ids`` that still have a tag, a manifest, a layer link or an upload
        (one statement; each check stops at the first row an index finds)."""
        ids = sorted(set(repo_ids))
        if not ids:
            return set()
        rid = repositories.c.id
        used = or_(*(exists().where(t.c.repository_id == rid) for t in (tags, manifests, repository_blobs, uploads)))
        return set(self.conn.execute(select(rid).where(rid.in_(ids), used)).scalars())

    def delete(self, repo_id: int) -> None:
        self.conn.execute(delete(repositories).where(repositories.c.id == repo_id))
