"""UsageStore: storage used now and over time, and per repository (the dashboard's numbers and the
metrics endpoint's bounded aggregates).

The whole-registry aggregates (logical bytes, per-repository usage) scan every link and
manifest, so only the usage job (``lifecycle/usage.py``) computes them, in the background;
a page reads the stored sample, or aggregates over the repositories of one page only.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, delete, func, insert, select

from dockyard.meta.schema import (
    ACTIVE,
    READY,
    blobs,
    manifests,
    repositories,
    repository_blobs,
    repository_usage,
    tags,
    uploads,
    usage_samples,
)


@dataclass(frozen=True, slots=True)
class Totals:
    blobs: int
    blob_bytes: int
    repositories: int
    uploads: int
    upload_bytes: int


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    blobs: int
    bytes: int
    logical_bytes: int
    repositories: int
    manifests: int

    @property
    def dedup_ratio(self) -> float:
        """Bytes the repositories would hold each on its own, per byte stored."""
        return self.logical_bytes / self.bytes if self.bytes else 1.0


@dataclass(frozen=True, slots=True)
class RepoUsage:
    id: int
    name: str
    bytes: int
    images: int
    tags: int
    last_push: float | None
    last_pull: float | None


SORTS = {"name": repositories.c.name, "bytes": repository_usage.c.bytes, "images": repository_usage.c.images,
         "last_push": repository_usage.c.last_push}


class UsageStore:
    def __init__(self, conn: Connection):
        self.conn = conn

    # ---- now -------------------------------------------------------------------
    def stored(self) -> tuple[int, int]:
        """Blobs and bytes in storage now (ready blobs)."""
        n, total = self.conn.execute(select(func.count(), func.coalesce(func.sum(blobs.c.size), 0))
                                     .where(blobs.c.state == READY)).one()
        return int(n), int(total)

    # ---- the usage job ---------------------------------------------------------------
    def measure(self, now: float) -> Sample:
        n, total = self.stored()
        logical = self.conn.execute(select(func.coalesce(func.sum(blobs.c.size), 0)).select_from(
            repository_blobs.join(blobs, blobs.c.digest == repository_blobs.c.digest))).scalar()
        repos = self.conn.execute(select(func.count()).select_from(repositories)
                                  .where(repositories.c.deleted_at.is_(None))).scalar()
        mans = self.conn.execute(select(func.count()).select_from(manifests).where(manifests.c.state == ACTIVE)).scalar()
        return Sample(now, n, total, int(logical or 0), int(repos or 0), int(mans or 0))

    def record(self, sample: Sample, keep: int) -> None:
        self.conn.execute(insert(usage_samples).values(
            at=sample.at, blobs=sample.blobs, bytes=sample.bytes, logical_bytes=sample.logical_bytes,
            repositories=sample.repositories, manifests=sample.manifests))
        cutoff = self.conn.execute(select(usage_samples.c.id).order_by(usage_samples.c.id.desc())
                                   .offset(keep).limit(1)).scalar()
        if cutoff is not None:
            self.conn.execute(delete(usage_samples).where(usage_samples.c.id <= cutoff))

    def samples(self, since: float, limit: int = 2000) -> list[Sample]:
        rows = self.conn.execute(select(usage_samples).where(usage_samples.c.at >= since)
                                 .order_by(usage_samples.c.at.desc()).limit(limit))
        return [Sample(r.at, r.blobs, r.bytes, r.logical_bytes, r.repositories, r.manifests) for r in rows][::-1]

    def latest(self) -> Sample | None:
        found = self.samples(0.0, 1)
        return found[0] if found else None

    def repository_ids_after(self, after: int, limit: int) -> list[int]:
        return list(self.conn.execute(select(repositories.c.id).where(repositories.c.id > after)
                                      .order_by(repositories.c.id).limit(limit)).scalars())

    def names_of(self, repo_ids: list[int]) -> list[tuple[int, str]]:
        return [tuple(r) for r in self.conn.execute(select(repositories.c.id, repositories.c.name)
                                                    .where(repositories.c.id.in_(repo_ids)))]

    def store_repository_usage(self, rows: list[RepoUsage], now: float) -> None:
        if not rows:
            return
        ids = [r.id for r in rows]
        self.conn.execute(delete(repository_usage).where(repository_usage.c.repository_id.in_(ids)))
        self.conn.execute(insert(repository_usage), [
            {"repository_id": r.id, "bytes": r.bytes, "images": r.images, "tags": r.tags, "last_push": r.last_push,
             "last_pull": r.last_pull, "sampled_at": now} for r in rows])

    # ---- the repositories page ---------------------------------------------------------
    def repository_page(self, search: str, sort: str, descending: bool, offset: int, limit: int,
                        figures: bool = True) -> tuple[int, list[RepoUsage]]:
        """One page of live repositories, ordered by name or by a sampled figure (an index on
        each); the figures shown are computed now, for this page's repositories only."""
        where = [repositories.c.deleted_at.is_(None)]
        if search:
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append(repositories.c.name.like(f"%{escaped}%", escape="\\"))
        total = self.conn.execute(select(func.count()).select_from(repositories).where(*where)).scalar()
        key = SORTS.get(sort, repositories.c.name)
        order = [key.desc() if descending else key.asc(), repositories.c.name]
        if key is not repositories.c.name:  # unsampled repositories last, whichever the direction
            order.insert(0, repository_usage.c.repository_id.is_(None))
        q = (select(repositories.c.id, repositories.c.name)
             .select_from(repositories.outerjoin(repository_usage,
                                                 repository_usage.c.repository_id == repositories.c.id))
             .where(*where).order_by(*order).offset(offset).limit(limit))
        page = list(self.conn.execute(q))
        usage = self.usage_of([r.id for r in page]) if figures else {r.id: (0, 0, 0, None, None) for r in page}
        return int(total or 0), [RepoUsage(r.id, r.name, *usage[r.id]) for r in page]

    def usage_of(self, repo_ids: list[int]) -> dict[int, tuple]:
        """(bytes, images, tags, last push, last pull) of each repository, read now."""
        if not repo_ids:
            return {}
        linked = dict(self.conn.execute(
            select(repository_blobs.c.repository_id, func.coalesce(func.sum(blobs.c.size), 0))
            .select_from(repository_blobs.join(blobs, blobs.c.digest == repository_blobs.c.digest))
            .where(repository_blobs.c.repository_id.in_(repo_ids)).group_by(repository_blobs.c.repository_id)).all())
        images = {r[0]: r[1:] for r in self.conn.execute(
            select(manifests.c.repository_id, func.count(), func.max(manifests.c.pushed_at),
                   func.max(manifests.c.last_pulled_at))
            .where(manifests.c.repository_id.in_(repo_ids), manifests.c.state == ACTIVE)
            .group_by(manifests.c.repository_id))}
        tagged = dict(self.conn.execute(select(tags.c.repository_id, func.count())
                                        .where(tags.c.repository_id.in_(repo_ids))
                                        .group_by(tags.c.repository_id)).all())
        out = {}
        for rid in repo_ids:
            n, push, pull = images.get(rid, (0, None, None))
            out[rid] = (int(linked.get(rid, 0)), int(n), int(tagged.get(rid, 0)), push, pull)
        return out

    def exclusive_bytes(self, repo_id: int) -> int:
        """Bytes deleting the repository would free: its linked blobs no other repository links
        (one index probe per link of this repository; nothing else is read)."""
        o = repository_blobs.alias("other_links")
        other = select(o.c.digest).where(o.c.digest == repository_blobs.c.digest,
                                          o.c.repository_id != repo_id).exists()
        total = self.conn.execute(
            select(func.coalesce(func.sum(blobs.c.size), 0))
            .select_from(repository_blobs.join(blobs, blobs.c.digest == repository_blobs.c.digest))
            .where(repository_blobs.c.repository_id == repo_id, ~other)).scalar()
        return int(total or 0)

    # ---- the metrics endpoint (bounded aggregates, cached by registry/usage.py) ---------
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
