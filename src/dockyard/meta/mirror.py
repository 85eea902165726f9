"""MirrorStore: the images held under a mirror's repository prefix, with their sizes and last pulls."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from dockyard.meta.schema import ACTIVE, blobs, manifest_references, manifests, repositories


@dataclass(frozen=True, slots=True)
class MirroredImage:
    repository: str
    repository_id: int
    manifest_id: int
    digest: str
    size: int          # its payload, its blobs and its children's (an index), each counted once here
    last_used: float   # last pull, else when it was mirrored
    children: tuple[tuple[int, str], ...] = ()  # (manifest id, digest) of an index's children


def _escape(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class MirrorStore:
    def __init__(self, conn: Connection):
        self.conn = conn

    def images(self, prefix: str) -> list[MirroredImage]:
        """Top-level images (not a child of an index in the same repository) under ``prefix``,
        least recently used first."""
        rows = self.conn.execute(
            select(manifests.c.id, manifests.c.repository_id, repositories.c.name, manifests.c.digest,
                   manifests.c.size, func.coalesce(manifests.c.last_pulled_at, manifests.c.pushed_at))
            .join(repositories, repositories.c.id == manifests.c.repository_id)
            .where(repositories.c.name.like(_escape(prefix) + "%", escape="\\"),
                   repositories.c.deleted_at.is_(None), manifests.c.state == ACTIVE)).all()
        if not rows:
            return []
        ids = [r[0] for r in rows]
        blob_bytes: dict[int, int] = {}
        children: dict[int, list[str]] = {}
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            for mid, kind, size, digest in self.conn.execute(
                    select(manifest_references.c.manifest_id, manifest_references.c.kind, blobs.c.size,
                           manifest_references.c.digest)
                    .outerjoin(blobs, blobs.c.digest == manifest_references.c.digest)
                    .where(manifest_references.c.manifest_id.in_(part))):
                if kind == "blob":
                    blob_bytes[mid] = blob_bytes.get(mid, 0) + (size or 0)
                else:
                    children.setdefault(mid, []).append(digest)
        by_key = {(r[1], r[3]): r for r in rows}
        child_ids = {mid: tuple((by_key[(repo, d)][0], d) for d in children.get(mid, ()) if (repo, d) in by_key)
                     for mid, repo in ((r[0], r[1]) for r in rows)}
        is_child = {c for cs in child_ids.values() for c, _ in cs}
        own = {r[0]: r[4] + blob_bytes.get(r[0], 0) for r in rows}
        out = []
        for mid, repo_id, name, digest, size, used in rows:
            if mid in is_child:
                continue
            kids = child_ids[mid]
            total = own[mid] + sum(own[c] for c, _ in kids)
            out.append(MirroredImage(name, repo_id, mid, digest, total, float(used or 0), kids))
        out.sort(key=lambda i: (i.last_used, i.manifest_id))
        return out

