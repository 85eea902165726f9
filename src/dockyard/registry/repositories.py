"""Whole-repository delete (admin)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from dockyard.meta.manifests import ManifestStore
from dockyard.meta.repositories import RepositoryStore
from dockyard.meta.tags import TagStore
from dockyard.registry.common import require_repo
from dockyard.registry.context import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RepositoryDeleted:
    name: str
    manifests: int
    tags: int


def delete(reg: Registry, name: str, actor: str | None = None) -> RepositoryDeleted:
    """Hide the repository: its tags go to history, its manifests turn pending_delete.

    No data is deleted here; links and blobs are left for the reclamation pipeline.
    """
    now = reg.now()
    with reg.db.write() as conn:
        repo = require_repo(conn, name)
        store = ManifestStore(conn)
        ids = store.active_ids(repo.id)
        removed = TagStore(conn).delete_for_manifests(repo.id, ids, now, actor)
        count = store.mark_pending_delete(ids, now, actor, now + reg.config.scrub_time)
        RepositoryStore(conn).mark_deleted(repo.id, now)
    log.info("repository %s deleted by %s: %d manifests, %d tags", name, actor or "-", count, len(removed))
    return RepositoryDeleted(name, count, len(removed))
