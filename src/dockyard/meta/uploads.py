"""UploadStore: upload sessions. The staged bytes are in storage, not here."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, delete, select, update

from dockyard.meta.schema import uploads as t


@dataclass(frozen=True, slots=True)
class Upload:
    id: str
    repository_id: int
    size: int
    created_at: float


class UploadStore:
    def __init__(self, conn: Connection):
        self.conn = conn

    def create(self, upload_id: str, repo_id: int, now: float) -> Upload:
        self.conn.execute(t.insert().values(id=upload_id, repository_id=repo_id, size=0, created_at=now, updated_at=now))
        return Upload(upload_id, repo_id, 0, now)

    def get(self, upload_id: str) -> Upload | None:
        row = self.conn.execute(select(t.c.repository_id, t.c.size, t.c.created_at).where(t.c.id == upload_id)).first()
        return Upload(upload_id, row.repository_id, row.size, row.created_at) if row else None

    def advance(self, upload_id: str, old_size: int, new_size: int, now: float) -> bool:
        """Compare-and-set the size; False if another request moved it first."""
        res = self.conn.execute(
            update(t).where(t.c.id == upload_id, t.c.size == old_size).values(size=new_size, updated_at=now))
        return res.rowcount == 1

    def delete(self, upload_id: str) -> bool:
        return self.conn.execute(delete(t).where(t.c.id == upload_id)).rowcount > 0
