"""BrowseStore: one repository's images, tags, tag history and referrers, and the trail of
deletes, paged for the dashboard. Every query is bounded by a limit and walks an index."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection, func, select

from dockyard.meta.schema import ACTIVE, manifests, repositories, tag_history, tags


@dataclass
class ImageRow:
    id: int
    digest: str
    media_type: str
    artifact_type: str | None
    size: int
    subject: str | None
    pushed_at: float
    last_pulled_at: float | None
    tags: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class TagRow:
    name: str
    digest: str
    updated_at: float


@dataclass(frozen=True, slots=True)
class HistoryRow:
    repository: str
    tag: str
    digest: str
    action: str
    at: float
    actor: str | None


_IMAGE_COLUMNS = (manifests.c.id, manifests.c.digest, manifests.c.media_type, manifests.c.artifact_type,
                  manifests.c.size, manifests.c.subject_digest, manifests.c.pushed_at, manifests.c.last_pulled_at)


class BrowseStore:
    def __init__(self, conn: Connection):
        self.conn = conn

    def repository(self, name: str):
        return self.conn.execute(select(repositories.c.id, repositories.c.name, repositories.c.created_at)
                                 .where(repositories.c.name == name, repositories.c.deleted_at.is_(None))).first()

    def images(self, repo_id: int, offset: int, limit: int) -> tuple[int, list[ImageRow]]:
        """Active images, newest push first, with their tags."""
        where = (manifests.c.repository_id == repo_id, manifests.c.state == ACTIVE)
        total = self.conn.execute(select(func.count()).select_from(manifests).where(*where)).scalar()
        rows = [ImageRow(*r) for r in self.conn.execute(
            select(*_IMAGE_COLUMNS).where(*where).order_by(manifests.c.pushed_at.desc(), manifests.c.id.desc())
            .offset(offset).limit(limit))]
        if rows:
            by_id = {r.id: r for r in rows}
            for mid, name in self.conn.execute(select(tags.c.manifest_id, tags.c.name)
                                               .where(tags.c.manifest_id.in_(list(by_id))).order_by(tags.c.name)):
                by_id[mid].tags.append(name)
        return int(total or 0), rows

    def tags(self, repo_id: int, limit: int) -> tuple[int, list[TagRow]]:
        total = self.conn.execute(select(func.count()).select_from(tags).where(tags.c.repository_id == repo_id)).scalar()
        rows = self.conn.execute(select(tags.c.name, manifests.c.digest, tags.c.updated_at)
                                 .join(manifests, manifests.c.id == tags.c.manifest_id)
                                 .where(tags.c.repository_id == repo_id).order_by(tags.c.name).limit(limit))
        return int(total or 0), [TagRow(*r) for r in rows]

    def tag_history(self, repo_id: int, limit: int) -> list[HistoryRow]:
        rows = self.conn.execute(
            select(tag_history.c.tag, tag_history.c.manifest_digest, tag_history.c.action, tag_history.c.at,
                   tag_history.c.actor)
            .where(tag_history.c.repository_id == repo_id).order_by(tag_history.c.id.desc()).limit(limit))
        return [HistoryRow("", *r) for r in rows]

    def referrers(self, repo_id: int, limit: int) -> list[ImageRow]:
        """Active manifests of the repository that have a subject (signatures, SBOMs, ...)."""
        return [ImageRow(*r) for r in self.conn.execute(
            select(*_IMAGE_COLUMNS).where(manifests.c.repository_id == repo_id, manifests.c.state == ACTIVE,
                                          manifests.c.subject_digest.is_not(None))
            .order_by(manifests.c.pushed_at.desc()).limit(limit))]

    def deletes(self, limit: int) -> list[HistoryRow]:
        """The newest tag deletions of the whole registry (a delete, prune or purge records one
        per tag, with who did it): the trail of deletes."""
        rows = self.conn.execute(
            select(repositories.c.name, tag_history.c.tag, tag_history.c.manifest_digest, tag_history.c.action,
                   tag_history.c.at, tag_history.c.actor)
            .join(repositories, repositories.c.id == tag_history.c.repository_id)
            .where(tag_history.c.action == "delete").order_by(tag_history.c.id.desc()).limit(limit))
        return [HistoryRow(*r) for r in rows]
