"""UploadStore: upload sessions. The staged bytes are in storage, not here.

A session has at most one writer at a time: a request claims the row (``claim``, a random
token and a lease it renews while it streams), and only the claim's holder can move the
acknowledged size (``release``) or remove the session (``delete_claimed``). A claim whose
lease ran out (its process died) can be taken over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, delete, null, or_, select, update

from dockyard.meta.db import driver_execute, on_driver
from dockyard.meta.schema import uploads as t


@dataclass(frozen=True, slots=True)
class Upload:
    id: str
    repository_id: int
    size: int
    created_at: float


# the push path's statements, built once (no construct or cache key to build per request)
_INSERT = t.insert()
_GET = select(t.c.repository_id, t.c.size, t.c.created_at).where(t.c.id == bindparam("upload_id"))
_CLAIM = (update(t).where(t.c.id == bindparam("upload_id"),
                          or_(t.c.writer.is_(None), t.c.writer_until < bindparam("now")))
          .values(writer=bindparam("token"), writer_until=bindparam("until"), updated_at=bindparam("now"))
          .returning(t.c.repository_id, t.c.size, t.c.created_at))
_RENEW = (update(t).where(t.c.id == bindparam("upload_id"), t.c.writer == bindparam("token"))
          .values(writer_until=bindparam("until"), updated_at=bindparam("now")))
_RELEASE = (update(t).where(t.c.id == bindparam("upload_id"), t.c.writer == bindparam("token"))
            .values(writer=null(), writer_until=null(), updated_at=bindparam("now")))
_RELEASE_SIZE = _RELEASE.values(size=bindparam("new_size"))
_DELETE_CLAIMED = delete(t).where(t.c.id == bindparam("upload_id"), t.c.writer == bindparam("token"))

# the same statements as SQL text for SQLite's driver (``driver_execute``: no SQLAlchemy execute
# inside the writer's turn); every column is an integer, a float or a string, so the driver's
# values are the ones SQLAlchemy would give
_SQLITE_INSERT = ("INSERT INTO uploads (id, repository_id, size, created_at, updated_at, writer, writer_until) "
                  "VALUES (?, ?, 0, ?, ?, ?, ?)")
_SQLITE_GET = "SELECT repository_id, size, created_at FROM uploads WHERE id = ?"
_SQLITE_CLAIM = ("UPDATE uploads SET writer = ?, writer_until = ?, updated_at = ? "
                 "WHERE id = ? AND (writer IS NULL OR writer_until < ?) RETURNING repository_id, size, created_at")
_SQLITE_RELEASE = "UPDATE uploads SET writer = NULL, writer_until = NULL, updated_at = ? WHERE id = ? AND writer = ?"
_SQLITE_RELEASE_SIZE = ("UPDATE uploads SET writer = NULL, writer_until = NULL, updated_at = ?, size = ? "
                        "WHERE id = ? AND writer = ?")
_SQLITE_DELETE_CLAIMED = "DELETE FROM uploads WHERE id = ? AND writer = ?"


class UploadStore:
    def __init__(self, conn: Connection):
        self.conn = conn
        self.raw = on_driver(conn)  # fixed hot statements on SQLite's driver

    def create(self, upload_id: str, repo_id: int, now: float, *, writer: str | None = None,
               writer_until: float | None = None) -> Upload:
        if self.raw:
            driver_execute(self.conn, _SQLITE_INSERT, (upload_id, repo_id, now, now, writer, writer_until))
            return Upload(upload_id, repo_id, 0, now)
        self.conn.execute(_INSERT, {"id": upload_id, "repository_id": repo_id, "size": 0, "created_at": now,
                                    "updated_at": now, "writer": writer, "writer_until": writer_until})
        return Upload(upload_id, repo_id, 0, now)

    def get(self, upload_id: str) -> Upload | None:
        if self.raw:
            found = driver_execute(self.conn, _SQLITE_GET, (upload_id,)).fetchall()
            return Upload(upload_id, *found[0]) if found else None
        row = self.conn.execute(_GET, {"upload_id": upload_id}).first()
        return Upload(upload_id, row.repository_id, row.size, row.created_at) if row else None

    def claim(self, upload_id: str, token: str, now: float, until: float) -> tuple[Upload | None, bool]:
        """Make ``token`` the session's only writer until ``until``. Returns (the session, True)
        when claimed, (the session, False) when another live claim holds it, (None, False) when
        there is no such session."""
        if self.raw:
            claimed = driver_execute(self.conn, _SQLITE_CLAIM, (token, until, now, upload_id, now)).fetchall()
            if claimed:
                return Upload(upload_id, *claimed[0]), True
            return self.get(upload_id), False
        row = self.conn.execute(_CLAIM, {"upload_id": upload_id, "now": now, "token": token, "until": until}).first()
        if row is not None:
            return Upload(upload_id, row.repository_id, row.size, row.created_at), True
        return self.get(upload_id), False

    def renew(self, upload_id: str, token: str, now: float, until: float) -> bool:
        """Extend a claim; False if ``token`` no longer holds it."""
        res = self.conn.execute(_RENEW, {"upload_id": upload_id, "token": token, "until": until, "now": now})
        return res.rowcount == 1

    def release(self, upload_id: str, token: str, now: float, size: int | None = None) -> bool:
        """End a claim, acknowledging ``size`` bytes if given; False if ``token`` no longer held it."""
        if self.raw:
            if size is None:
                return driver_execute(self.conn, _SQLITE_RELEASE, (now, upload_id, token)).rowcount == 1
            return driver_execute(self.conn, _SQLITE_RELEASE_SIZE, (now, size, upload_id, token)).rowcount == 1
        params = {"upload_id": upload_id, "token": token, "now": now}
        if size is None:
            res = self.conn.execute(_RELEASE, params)
        else:
            res = self.conn.execute(_RELEASE_SIZE, {**params, "new_size": size})
        return res.rowcount == 1

    def delete_claimed(self, upload_id: str, token: str) -> bool:
        if self.raw:
            return driver_execute(self.conn, _SQLITE_DELETE_CLAIMED, (upload_id, token)).rowcount > 0
        return self.conn.execute(_DELETE_CLAIMED, {"upload_id": upload_id, "token": token}).rowcount > 0

    def delete(self, upload_id: str) -> bool:
        return self.conn.execute(delete(t).where(t.c.id == upload_id)).rowcount > 0

    def existing(self, upload_ids) -> set[str]:
        """Those of ``upload_ids`` that are live sessions."""
        wanted = sorted(set(upload_ids))
        if not wanted:
            return set()
        return set(self.conn.execute(select(t.c.id).where(t.c.id.in_(wanted))).scalars())

    def stale(self, before: float, limit: int, *, lock: bool = True) -> list[Any]:
        q = (select(t.c.id, t.c.repository_id, t.c.size)
             .where(t.c.updated_at < before).order_by(t.c.updated_at).limit(limit))
        if lock:
            q = q.with_for_update(skip_locked=True)
        return list(self.conn.execute(q))
