"""BlobStore: blob rows and the repository links ("layer links")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from sqlalchemy import Connection, delete, select

from dockyard.meta.db import insert_ignore
from dockyard.meta.schema import blobs, repository_blobs


@dataclass(frozen=True, slots=True)
class Blob:
    digest: str
    size: int


class BlobStore:
    def __init__(self, conn: Connection):
        self.conn = conn

    def get(self, digest: str) -> Blob | None:
        row = self.conn.execute(select(blobs.c.size).where(blobs.c.digest == digest)).first()
        return Blob(digest, row.size) if row else None

    def get_linked(self, repo_id: int, digest: str) -> Blob | None:
        row = self.conn.execute(
            select(blobs.c.size)
            .join(repository_blobs, repository_blobs.c.digest == blobs.c.digest)
            .where(repository_blobs.c.repository_id == repo_id, blobs.c.digest == digest)
        ).first()
        return Blob(digest, row.size) if row else None

    def linked_among(self, repo_id: int, digests: Iterable[str]) -> dict[str, int]:
        """digest -> size for those of ``digests`` linked to the repository."""
        wanted = list(set(digests))
        if not wanted:
            return {}
        rows = self.conn.execute(
            select(blobs.c.digest, blobs.c.size)
            .join(repository_blobs, repository_blobs.c.digest == blobs.c.digest)
            .where(repository_blobs.c.repository_id == repo_id, blobs.c.digest.in_(wanted))
        )
        return {r.digest: r.size for r in rows}

    def add(self, digest: str, size: int, now: float) -> None:
        insert_ignore(self.conn, blobs, {"digest": digest, "size": size, "created_at": now})

    def link(self, repo_id: int, digests: Iterable[str], now: float) -> None:
        rows = [{"repository_id": repo_id, "digest": d, "created_at": now} for d in set(digests)]
        if rows:
            insert_ignore(self.conn, repository_blobs, rows)

    def unlink(self, repo_id: int, digest: str) -> bool:
        res = self.conn.execute(
            delete(repository_blobs).where(
                repository_blobs.c.repository_id == repo_id, repository_blobs.c.digest == digest
            )
        )
        return res.rowcount > 0


def get_linked_by_name(conn: Connection, repo_name: str, digest: str) -> Blob | None:
    """The blob if ``repo_name`` (not deleted) links it: one query, for the HEAD/GET hot path."""
    from dockyard.meta.schema import repositories

    row = conn.execute(
        select(blobs.c.size)
        .select_from(repositories)
        .join(repository_blobs, repository_blobs.c.repository_id == repositories.c.id)
        .join(blobs, blobs.c.digest == repository_blobs.c.digest)
        .where(repositories.c.name == repo_name, repositories.c.deleted_at.is_(None),
               repository_blobs.c.digest == digest)
    ).first()
    return Blob(digest, row.size) if row else None
