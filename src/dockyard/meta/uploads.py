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


class UploadStore:
    def __init__(self, conn: Connection):
        self.conn = conn

    def create(self, upload_id: str, repo_id: int, now: float, *, writer: str | None = None,
               writer_until: float | None = None) -> Upload:
        self.conn.execute(_INSERT, {"id": upload_id, "repository_id": repo_id, "size": 0, "created_at": now,
                                    "updated_at": now, "writer": writer, "writer_until": writer_until})
        return Upload(upload_id, repo_id, 0, now)

    def get(self, upload_id: str) -> Upload | None:
        row = self.conn.execute(_GET, {"upload_id": upload_id}).first()
        return Upload(upload_id, row.repository_id, row.size, row.created_at) if row else None

    def claim(self, upload_id: str, token: str, now: float, until: float) -> tuple[Upload | None, bool]:
        """Make ``token`` the session's only writer until ``until``. Returns (the session, True)
        when claimed, (the session, False) when another live claim holds it, (None, False) when
        there is no such session."""
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
        params = {"upload_id": upload_id, "token": token, "now": now}
        if size is None:
            res = self.conn.execute(_RELEASE, params)
        else:
            res = self.conn.execute(_RELEASE_SIZE, {**params, "new_size": size})
        return res.rowcount == 1

    def delete_claimed(self, upload_id: str, token: str) -> bool:
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
