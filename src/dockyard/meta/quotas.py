"""QuotaStore: quotas declared through the admin API and each quota's usage.

Usage is the bytes of the distinct blobs linked by the repositories whose names match the
quota's glob (SQL LIKE, escape ``\\``). The usage row is the quota's lock: every charge and
credit takes it FOR UPDATE first (PostgreSQL), then looks at the namespace's links, so two
pushes of one layer into two repositories of a namespace count it once.
"""

from __future__ import annotations

from typing import Iterable

from sqlalchemy import Connection, delete, func, select, update

from dockyard.meta.db import driver_execute, insert_ignore, on_driver
from dockyard.meta.schema import blobs, quota_usage, quotas, repositories, repository_blobs
from dockyard.quotas import Quota


def _in_namespace(q: Quota):
    return repositories.c.name.like(q.like(), escape="\\")


# read by every blob commit and manifest push (quotas.in_force): built once
_STORED = select(quotas).order_by(quotas.c.name)
_SQLITE_STORED = "SELECT name, repositories, hard, soft FROM quotas ORDER BY name"  # on SQLite's driver


class QuotaStore:
    def __init__(self, conn: Connection):
        self.conn = conn

    # ---- declared through the admin API ---------------------------------------------------
    def stored(self) -> dict[str, Quota]:
        if on_driver(self.conn):
            return {r[0]: Quota(*r) for r in driver_execute(self.conn, _SQLITE_STORED).fetchall()}
        rows = self.conn.execute(_STORED)
        return {r.name: Quota(r.name, r.repositories, r.hard, r.soft) for r in rows}

    def put(self, q: Quota, now: float, actor: str | None) -> None:
        values = {"repositories": q.repositories, "hard": q.hard, "soft": q.soft, "updated_at": now,
                  "updated_by": actor}
        if not insert_ignore(self.conn, quotas, {"name": q.name, **values}):
            self.conn.execute(update(quotas).where(quotas.c.name == q.name).values(**values))

    def delete(self, name: str) -> bool:
        self.conn.execute(delete(quota_usage).where(quota_usage.c.name == name))
        return self.conn.execute(delete(quotas).where(quotas.c.name == name)).rowcount > 0

    # ---- usage ----------------------------------------------------------------------------
    def exact(self, q: Quota) -> int:
        """Recounted from the links: the bytes of the distinct blobs the namespace links."""
        linked = (select(repository_blobs.c.digest)
                  .join(repositories, repositories.c.id == repository_blobs.c.repository_id)
                  .where(_in_namespace(q)).distinct().subquery())
        total = self.conn.execute(select(func.coalesce(func.sum(blobs.c.size), 0))
                                  .join(linked, linked.c.digest == blobs.c.digest)).scalar()
        return int(total or 0)

    def lock(self, q: Quota, now: float) -> int:
        """The quota's usage, its row locked until the transaction ends (counted afresh when
        the quota is new or its glob changed)."""
        row = self.conn.execute(select(quota_usage.c.bytes, quota_usage.c.repositories)
                                .where(quota_usage.c.name == q.name).with_for_update()).first()
        if row is not None and row.repositories == q.repositories:
            return int(row.bytes)
        if row is None:
            insert_ignore(self.conn, quota_usage, {"name": q.name, "repositories": q.repositories, "bytes": 0,
                                                   "updated_at": now})
            self.conn.execute(select(quota_usage.c.name).where(quota_usage.c.name == q.name).with_for_update())
        exact = self.exact(q)
        self.set(q, exact, now)
        return exact

    def add(self, name: str, delta: int, now: float) -> None:
        self.conn.execute(update(quota_usage).where(quota_usage.c.name == name)
                          .values(bytes=quota_usage.c.bytes + delta, updated_at=now))

    def set(self, q: Quota, value: int, now: float) -> None:
        self.conn.execute(update(quota_usage).where(quota_usage.c.name == q.name)
                          .values(bytes=value, repositories=q.repositories, updated_at=now))

    def usage(self) -> dict[str, tuple[str, int]]:
        """name -> (glob the count is for, bytes), as recorded."""
        return {r.name: (r.repositories, int(r.bytes)) for r in self.conn.execute(select(quota_usage))}

    # ---- links ----------------------------------------------------------------------------
    def linked_in_namespace(self, q: Quota, digests: Iterable[str]) -> set[str]:
        wanted = sorted(set(digests))
        if not wanted:
            return set()
        return set(self.conn.execute(
            select(repository_blobs.c.digest)
            .join(repositories, repositories.c.id == repository_blobs.c.repository_id)
            .where(repository_blobs.c.digest.in_(wanted), _in_namespace(q)).distinct()).scalars())

    def hold_blobs(self, digests: Iterable[str]) -> None:
        """Key-share lock the blob rows (digest order), as ``BlobStore.link`` does, before a
        quota's row: the collector locks blob rows, then the quota's (to credit it), so a
        mount or a restore taking the quota's row first could deadlock with it."""
        wanted = sorted(set(digests))
        if wanted:
            self.conn.execute(select(blobs.c.digest).where(blobs.c.digest.in_(wanted)).order_by(blobs.c.digest)
                              .with_for_update(read=True, key_share=True))

    def sizes(self, digests: Iterable[str]) -> dict[str, int]:
        wanted = sorted(set(digests))
        if not wanted:
            return {}
        return {r.digest: int(r.size) for r in self.conn.execute(
            select(blobs.c.digest, blobs.c.size).where(blobs.c.digest.in_(wanted)))}

    def names_of(self, repo_ids: Iterable[int]) -> dict[int, str]:
        ids = sorted(set(repo_ids))
        if not ids:
            return {}
        return {r.id: r.name for r in self.conn.execute(
            select(repositories.c.id, repositories.c.name).where(repositories.c.id.in_(ids)))}
