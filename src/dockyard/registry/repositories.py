"""Whole-repository delete (admin)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from dockyard.meta.gc import PurgeTarget
from dockyard.meta.manifests import ManifestStore
from dockyard.registry.manifests import check_mutable, trash_manifests
from dockyard.meta.repositories import RepositoryStore
from dockyard.meta.tags import TagStore
from dockyard import faults
from dockyard.errors import name_unknown
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
    cfg = reg.config
    with reg.db.write() as conn:
        repo = require_repo(conn, name)
        # exclusive: a manifest PUT share-locks the row (RepositoryStore.ensure), so a push runs
        # wholly before this delete (its image is deleted too) or after it (it revives the name)
        repo = RepositoryStore(conn).lock(repo.id)
        if repo is None:
            raise name_unknown(name)
        faults.point("repositories.delete_locked")
        targets = [PurgeTarget(m.id, repo.id, m.digest) for m in ManifestStore(conn).active(repo.id)]
        check_mutable(conn, cfg, name, TagStore(conn).names_of(repo.id, [t.id for t in targets]))
        removed = trash_manifests(conn, cfg, repo.id, targets, now, actor)
        count = len(targets)
        RepositoryStore(conn).mark_deleted(repo.id, now)
    log.info("repository %s deleted by %s: %d manifests, %d tags", name, actor or "-", count, len(removed))
    return RepositoryDeleted(name, count, len(removed))
