"""Whole-repository delete (admin)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from dockyard.lifecycle.collector import GcOptions
from dockyard.lifecycle.purge import purge_manifests
from dockyard.meta.gc import PurgeTarget
from dockyard.meta.manifests import ManifestStore
from dockyard.meta.trash import TrashStore
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
    cfg = reg.config
    with reg.db.write() as conn:
        repo = require_repo(conn, name)
        store = ManifestStore(conn)
        ids = store.active_ids(repo.id)
        removed = TagStore(conn).delete_for_manifests(repo.id, ids, now, actor)
        if cfg.delayed_delete:
            TrashStore(conn).add_tags(repo.id, removed, now, actor, now + cfg.scrub_time, with_manifest=True)
            count = store.mark_pending_delete(ids, now, actor, now + cfg.scrub_time)
        else:
            targets = [PurgeTarget(m.id, repo.id, m.digest) for m in store.active(repo.id)]
            purge_manifests(conn, targets, now, GcOptions.from_config(cfg).purge, actor=actor)
            count = len(targets)
        RepositoryStore(conn).mark_deleted(repo.id, now)
    log.info("repository %s deleted by %s: %d manifests, %d tags", name, actor or "-", count, len(removed))
    return RepositoryDeleted(name, count, len(removed))
