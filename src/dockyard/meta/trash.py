"""TrashStore: the tags a delete removed, and the pending_delete images, for listing and restore."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection, delete, exists, func, select, update

from dockyard.meta.schema import (
    ACTIVE,
    PENDING_DELETE,
    blobs,
    manifest_references,
    manifests,
    repositories,
    repository_blobs,
    trashed_tags,
)
from dockyard.meta.tags import Tag


@dataclass
class TrashedImage:
    repository: str
    repository_id: int
    manifest_id: int
    digest: str
    media_type: str
    deleted_at: float
    deleted_by: str | None
    scrub_after: float
    tags: list[str] = field(default_factory=list)
    bytes_freed: int = 0


@dataclass(frozen=True, slots=True)
class TrashedTag:
    id: int
    repository: str
    repository_id: int
    tag: str
    manifest_id: int
    digest: str
    deleted_at: float
    deleted_by: str | None
    scrub_after: float


class TrashStore:
    def __init__(self, conn: Connection):
        self.conn = conn

    def add_tags(self, repo_id: int, removed: list[Tag], now: float, actor: str | None, scrub_after: float,
                 with_manifest: bool) -> None:
        if removed:
            self.conn.execute(trashed_tags.insert(), [
                {"repository_id": repo_id, "tag": t.name, "manifest_id": t.manifest_id,
                 "with_manifest": int(with_manifest), "deleted_at": now, "deleted_by": actor,
                 "scrub_after": scrub_after} for t in removed])

    def images(self, *, repository: str | None = None, limit: int = 1000, with_bytes: bool = True
               ) -> list[TrashedImage]:
        q = (select(repositories.c.name, manifests.c.repository_id, manifests.c.id, manifests.c.digest,
                    manifests.c.media_type, manifests.c.deleted_at, manifests.c.deleted_by, manifests.c.scrub_after)
             .join(repositories, repositories.c.id == manifests.c.repository_id)
             .where(manifests.c.state == PENDING_DELETE).order_by(manifests.c.deleted_at, manifests.c.id).limit(limit))
        if repository:
            q = q.where(repositories.c.name.like(repository.replace("*", "%")))
        out = [TrashedImage(r.name, r.repository_id, r.id, r.digest, r.media_type, r.deleted_at, r.deleted_by,
                            r.scrub_after) for r in self.conn.execute(q)]
        if out:
            ids = [i.manifest_id for i in out]
            tags: dict[int, list[str]] = {}
            for row in self.conn.execute(select(trashed_tags.c.manifest_id, trashed_tags.c.tag).where(
                    trashed_tags.c.manifest_id.in_(ids), trashed_tags.c.with_manifest == 1)
                    .order_by(trashed_tags.c.tag)):
                tags.setdefault(row.manifest_id, []).append(row.tag)
            for image in out:
                image.tags = tags.get(image.manifest_id, [])
                if with_bytes:
                    image.bytes_freed = self.bytes_freed(image.manifest_id, image.repository_id)
        return out

    def bytes_freed(self, manifest_id: int, repo_id: int) -> int:
        """Bytes purging this image would free: its blobs that nothing else references or links."""
        mine = select(manifest_references.c.digest).where(
            manifest_references.c.manifest_id == manifest_id, manifest_references.c.kind == "blob")
        other_ref = exists().where(manifest_references.c.digest == blobs.c.digest,
                                   manifest_references.c.kind == "blob",
                                   manifest_references.c.manifest_id != manifest_id)
        other_link = exists().where(repository_blobs.c.digest == blobs.c.digest,
                                    repository_blobs.c.repository_id != repo_id)
        total = self.conn.execute(select(func.coalesce(func.sum(blobs.c.size), 0)).where(
            blobs.c.digest.in_(mine), ~other_ref, ~other_link)).scalar()
        return int(total or 0)

    def tags(self, *, repository: str | None = None, limit: int = 1000) -> list[TrashedTag]:
        q = (select(trashed_tags, repositories.c.name, manifests.c.digest)
             .join(repositories, repositories.c.id == trashed_tags.c.repository_id)
             .join(manifests, manifests.c.id == trashed_tags.c.manifest_id)
             .where(trashed_tags.c.with_manifest == 0).order_by(trashed_tags.c.deleted_at).limit(limit))
        if repository:
            q = q.where(repositories.c.name.like(repository.replace("*", "%")))
        return [TrashedTag(r.id, r.name, r.repository_id, r.tag, r.manifest_id, r.digest, r.deleted_at, r.deleted_by,
                           r.scrub_after) for r in self.conn.execute(q)]

    def digests_with_prefix(self, repo_id: int, prefix: str, limit: int = 50) -> list[tuple[str, str]]:
        """(digest, state) of the repository's manifests whose digest starts with ``prefix``
        (the caller passes only ``algorithm:hex``, so no LIKE wildcard can be in it)."""
        return [(r.digest, r.state) for r in self.conn.execute(
            select(manifests.c.digest, manifests.c.state).where(
                manifests.c.repository_id == repo_id, manifests.c.digest.like(prefix + "%"))
            .order_by(manifests.c.digest).limit(limit))]

    def lock_pending(self, repo_id: int, digest: str):
        """The manifest row, locked: restore and the scrubber serialise on it."""
        return self.conn.execute(select(manifests.c.id, manifests.c.state, manifests.c.scrub_after).where(
            manifests.c.repository_id == repo_id, manifests.c.digest == digest).with_for_update()).first()

    def activate(self, manifest_id: int) -> None:
        self.conn.execute(update(manifests).where(manifests.c.id == manifest_id).values(
            state=ACTIVE, deleted_at=None, deleted_by=None, scrub_after=None))

    def tags_of(self, manifest_id: int, with_manifest: bool) -> list[tuple[int, str]]:
        return [(r.id, r.tag) for r in self.conn.execute(select(trashed_tags.c.id, trashed_tags.c.tag).where(
            trashed_tags.c.manifest_id == manifest_id, trashed_tags.c.with_manifest == int(with_manifest)))]

    def latest_trashed_tag(self, repo_id: int, tag: str):
        return self.conn.execute(select(trashed_tags.c.id, trashed_tags.c.manifest_id, trashed_tags.c.with_manifest)
                                 .where(trashed_tags.c.repository_id == repo_id, trashed_tags.c.tag == tag)
                                 .order_by(trashed_tags.c.deleted_at.desc(), trashed_tags.c.id.desc())
                                 .limit(1).with_for_update()).first()

    def drop(self, ids: list[int]) -> None:
        if ids:
            self.conn.execute(delete(trashed_tags).where(trashed_tags.c.id.in_(ids)))

    def drop_for_manifests(self, manifest_ids: list[int]) -> None:
        if manifest_ids:
            self.conn.execute(delete(trashed_tags).where(trashed_tags.c.manifest_id.in_(manifest_ids)))

    def expire(self, now: float, limit: int) -> list[int]:
        """Drop up to ``limit`` deleted tags whose scrub time has passed; returns the manifest
        of each (they lost a reference the caller must queue for review)."""
        rows = list(self.conn.execute(select(trashed_tags.c.id, trashed_tags.c.manifest_id).where(
            trashed_tags.c.scrub_after <= now, trashed_tags.c.with_manifest == 0)
            .order_by(trashed_tags.c.scrub_after).limit(limit)))
        self.drop([r.id for r in rows])
        return [r.manifest_id for r in rows]
