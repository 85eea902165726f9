"""TagStore: tags and the history of every tag move."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, delete, select, update

from dockyard.meta.db import driver_execute, insert_ignore, on_driver
from dockyard.meta.schema import manifests, tag_history, tags as t


@dataclass(frozen=True, slots=True)
class Tag:
    name: str
    manifest_id: int
    digest: str


# the manifest push's statements, built once
_GET = (select(t.c.manifest_id, manifests.c.digest).join(manifests, manifests.c.id == t.c.manifest_id)
        .where(t.c.repository_id == bindparam("repo_id"), t.c.name == bindparam("name")))
_MOVE = (update(t).where(t.c.repository_id == bindparam("repo_id"), t.c.name == bindparam("tag_name"))
         .values(manifest_id=bindparam("new_manifest_id"), updated_at=bindparam("now")))
_HISTORY = tag_history.insert()
# the same as SQL text for SQLite's driver (``driver_execute``: no SQLAlchemy execute in the writer's turn)
_SQLITE_GET = ("SELECT tags.manifest_id, manifests.digest FROM tags JOIN manifests ON manifests.id = tags.manifest_id "
               "WHERE tags.repository_id = ? AND tags.name = ?")
_SQLITE_INSERT = ("INSERT INTO tags (repository_id, name, manifest_id, updated_at) VALUES (?, ?, ?, ?) "
                  "ON CONFLICT DO NOTHING RETURNING repository_id")
_SQLITE_MOVE = "UPDATE tags SET manifest_id = ?, updated_at = ? WHERE repository_id = ? AND name = ?"
_SQLITE_HISTORY = ("INSERT INTO tag_history (repository_id, tag, manifest_digest, action, at, actor) "
                   "VALUES (?, ?, ?, ?, ?, ?)")
_UNREAD = object()


class TagStore:
    def __init__(self, conn: Connection):
        self.conn = conn
        self.raw = on_driver(conn)  # fixed hot statements on SQLite's driver

    def get(self, repo_id: int, name: str) -> Tag | None:
        if self.raw:
            found = driver_execute(self.conn, _SQLITE_GET, (repo_id, name)).fetchall()
            return Tag(name, *found[0]) if found else None
        row = self.conn.execute(_GET, {"repo_id": repo_id, "name": name}).first()
        return Tag(name, row.manifest_id, row.digest) if row else None

    def set(self, repo_id: int, name: str, manifest_id: int, digest: str, now: float, actor: str | None,
            current: Tag | None = _UNREAD) -> int | None:  # type: ignore[assignment]
        """Point the tag at the manifest; returns the id of the manifest it moved away from.
        ``current``: what :meth:`get` just returned in this transaction, if the caller has it."""
        if current is _UNREAD:
            current = self.get(repo_id, name)
        if current is not None and current.manifest_id == manifest_id:
            return None
        if current is None:
            if self.raw:
                inserted = driver_execute(self.conn, _SQLITE_INSERT, (repo_id, name, manifest_id, now)).fetchall()
            else:
                inserted = insert_ignore(self.conn, t, {"repository_id": repo_id, "name": name,
                                                        "manifest_id": manifest_id, "updated_at": now})
            action = "push"
            if not inserted:  # created concurrently: move it
                current = self.get(repo_id, name)
        if current is not None:
            if self.raw:
                driver_execute(self.conn, _SQLITE_MOVE, (manifest_id, now, repo_id, name))
            else:
                self.conn.execute(_MOVE, {"repo_id": repo_id, "tag_name": name, "new_manifest_id": manifest_id,
                                          "now": now})
            action = "move"
        self._history(repo_id, name, digest, action, now, actor)
        return current.manifest_id if current is not None else None

    def delete(self, repo_id: int, name: str, now: float, actor: str | None) -> Tag | None:
        current = self.get(repo_id, name)
        if current is None:
            return None
        self.conn.execute(delete(t).where(t.c.repository_id == repo_id, t.c.name == name))
        self._history(repo_id, name, current.digest, "delete", now, actor)
        return current

    def delete_for_manifests(self, repo_id: int, manifest_ids: list[int], now: float, actor: str | None) -> list[Tag]:
        """Remove every tag that points at one of ``manifest_ids``; each removal is recorded."""
        if not manifest_ids:
            return []
        rows = self.conn.execute(
            select(t.c.name, t.c.manifest_id, manifests.c.digest)
            .join(manifests, manifests.c.id == t.c.manifest_id)
            .where(t.c.repository_id == repo_id, t.c.manifest_id.in_(manifest_ids))
        ).all()
        if rows:
            self.conn.execute(delete(t).where(t.c.repository_id == repo_id, t.c.manifest_id.in_(manifest_ids)))
            for r in rows:
                self._history(repo_id, r.name, r.digest, "delete", now, actor)
        return [Tag(r.name, r.manifest_id, r.digest) for r in rows]

    def names_of(self, repo_id: int, manifest_ids: list[int]) -> list[str]:
        if not manifest_ids:
            return []
        return list(self.conn.execute(select(t.c.name).where(
            t.c.repository_id == repo_id, t.c.manifest_id.in_(manifest_ids))).scalars())

    def page(self, repo_id: int, last: str | None, limit: int | None) -> list[str]:
        q = select(t.c.name).where(t.c.repository_id == repo_id).order_by(t.c.name)
        if last:
            q = q.where(t.c.name > last)
        if limit is not None:
            q = q.limit(limit)
        return list(self.conn.execute(q).scalars())

    def _history(self, repo_id: int, tag: str, digest: str, action: str, now: float, actor: str | None) -> None:
        if self.raw:
            driver_execute(self.conn, _SQLITE_HISTORY, (repo_id, tag, digest, action, now, actor))
            return
        self.conn.execute(_HISTORY, {"repository_id": repo_id, "tag": tag, "manifest_digest": digest,
                                     "action": action, "at": now, "actor": actor})
