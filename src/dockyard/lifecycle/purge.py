"""Purging a manifest: its row goes, and everything it referenced is queued for review.

Shared by the collector (untagged manifests, referrers of a purged subject) and the
scrubber (pending_delete images past their scrub time). Runs inside the caller's
write transaction; deletes no data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Connection

from dockyard.meta.gc import QueueStore
from dockyard.meta.manifests import ManifestStore
from dockyard.meta.tags import TagStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PurgeOptions:
    gc_delay: float
    delete_untagged: bool
    referrers_follow_subject: bool


def purge_manifest(conn: Connection, manifest_id: int, repo_id: int, digest: str, now: float,
                   opts: PurgeOptions, actor: str | None = "gc") -> None:
    store = ManifestStore(conn)
    queue = QueueStore(conn)
    refs = store.references(manifest_id)
    TagStore(conn).delete_for_manifests(repo_id, [manifest_id], now, actor)
    store.purge(manifest_id)
    later = now + opts.gc_delay
    queue.review_links(repo_id, [d for k, d in refs if k == "blob"], later, "manifest_purged")
    children = [d for k, d in refs if k == "manifest"]
    if children and opts.delete_untagged:
        queue.review_manifests(store.ids_of(repo_id, children), later, "parent_purged")
    if opts.referrers_follow_subject:
        referrers = store.referrer_ids(repo_id, digest)
        if referrers:
            queue.review_manifests(referrers, now, "subject_purged")
    queue.review_repository(repo_id, later)
