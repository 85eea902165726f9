"""OrphanScan: keyset pages over blobs, layer links and repositories that say which rows nothing
references and nothing will review (the invariant ``fsck`` checks: every row is referenced, queued
for review, or tombstoned)."""

from __future__ import annotations

from sqlalchemy import Connection, exists, or_, select, tuple_

from dockyard.meta.schema import (
    COMMITTING,
    blobs,
    gc_blob_reviews,
    gc_link_reviews,
    gc_repository_reviews,
    gc_tombstones,
    manifest_references,
    manifests,
    repositories,
    repository_blobs,
    tags,
    uploads,
)


class OrphanScan:
    """Pages of (key, orphan) for fsck."""

    def __init__(self, conn: Connection):
        self.conn = conn

    def blobs(self, after: str, limit: int) -> list[tuple[str, bool]]:
        """A keyset page of ready blob rows after ``after``: (digest, orphan), where orphan
        means no manifest references it, no repository links it, no review is pending and
        no tombstone exists for it (``committing`` rows are the collector's own sweep)."""
        b = blobs.c
        orphan = ~or_(
            exists().where(manifest_references.c.digest == b.digest, manifest_references.c.kind == "blob"),
            exists().where(repository_blobs.c.digest == b.digest),
            exists().where(gc_blob_reviews.c.digest == b.digest),
            exists().where(gc_tombstones.c.digest == b.digest))
        rows = self.conn.execute(select(b.digest, orphan.label("orphan"))
                                 .where(b.digest > after, b.state != COMMITTING).order_by(b.digest).limit(limit))
        return [(r.digest, bool(r.orphan)) for r in rows]

    def links(self, after: tuple[int, str], limit: int) -> list[tuple[tuple[int, str], bool]]:
        """A keyset page of layer links after ``after``: ((repository_id, digest), orphan),
        where orphan means no manifest of the repository references the blob and no review
        of the link is pending."""
        link = repository_blobs.c
        refs = manifest_references.c
        orphan = ~or_(
            exists().where(refs.repository_id == link.repository_id, refs.digest == link.digest, refs.kind == "blob"),
            exists().where(gc_link_reviews.c.repository_id == link.repository_id,
                           gc_link_reviews.c.digest == link.digest))
        rows = self.conn.execute(select(link.repository_id, link.digest, orphan.label("orphan"))
                                 .where(tuple_(link.repository_id, link.digest) > tuple_(*after))
                                 .order_by(link.repository_id, link.digest).limit(limit))
        return [((r.repository_id, r.digest), bool(r.orphan)) for r in rows]

    def repositories(self, after: int, limit: int) -> list[tuple[int, bool]]:
        """A keyset page of repositories after ``after``: (id, orphan), where orphan means
        no tag, manifest, layer link or upload, and no review pending."""
        rid = repositories.c.id
        orphan = ~or_(*(exists().where(t.c.repository_id == rid)
                        for t in (tags, manifests, repository_blobs, uploads, gc_repository_reviews)))
        rows = self.conn.execute(select(rid, orphan.label("orphan")).where(rid > after).order_by(rid).limit(limit))
        return [(r.id, bool(r.orphan)) for r in rows]
