"""UsageStore: what the registry holds, in bounded aggregates (for the metrics endpoint)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from dockyard.meta.schema import READY, blobs, repositories, repository_blobs, uploads


@dataclass(frozen=True, slots=True)
class Totals:
    blobs: int
    blob_bytes: int
    repositories: int
    uploads: int
    upload_bytes: int


class UsageStore:
    def __init__(self, conn: Connection):
        self.conn = conn

    def totals(self) -> Totals:
        """Blobs, repositories and upload sessions with their bytes: one aggregate per table."""
        n_blobs, n_bytes = self.conn.execute(
            select(func.count(), func.coalesce(func.sum(blobs.c.size), 0)).where(blobs.c.state == READY)).one()
        n_repos = self.conn.execute(select(func.count()).select_from(repositories)
                                    .where(repositories.c.deleted_at.is_(None))).scalar_one()
        n_uploads, upload_bytes = self.conn.execute(
            select(func.count(), func.coalesce(func.sum(uploads.c.size), 0))).one()
        return Totals(int(n_blobs), int(n_bytes), int(n_repos), int(n_uploads), int(upload_bytes))

    def largest(self, top: int) -> list[tuple[str, int]]:
        """The ``top`` live repositories by the bytes of the blobs linked to them, largest first:
        one grouped join over the layer links (the cost grows with the links; callers cache it)."""
        size = func.sum(blobs.c.size).label("bytes")
        per_repository = (select(repository_blobs.c.repository_id, size)
                          .select_from(repository_blobs.join(blobs, blobs.c.digest == repository_blobs.c.digest))
                          .group_by(repository_blobs.c.repository_id).subquery())
        rows = self.conn.execute(
            select(repositories.c.name, per_repository.c.bytes)
            .join(per_repository, per_repository.c.repository_id == repositories.c.id)
            .where(repositories.c.deleted_at.is_(None))
            .order_by(per_repository.c.bytes.desc(), repositories.c.name).limit(top))
        return [(r.name, int(r.bytes)) for r in rows]
