"""Every delete a client or a policy asks for: manifests and tags, layer links, whole repositories.

A delete changes references only, in one transaction, and queues what lost its last
reference for review; no storage is deleted here (the collector does that). Images go to
the trash and turn ``pending_delete`` (restorable until ``scrub_time``); without
``delayed_delete`` they are purged at once. Immutable tags refuse every delete. ``reg`` is
the process's :class:`dockyard.registry.context.Registry` (config, db, clock).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from dockyard import faults
from dockyard.errors import RegistryError, blob_unknown, manifest_unknown, name_unknown
from dockyard.lifecycle import quotas
from dockyard.lifecycle.collector import GcOptions
from dockyard.lifecycle.rules import check_mutable
from dockyard.lifecycle.purge import purge_manifests
from dockyard.meta.hosts import HostStore
from dockyard.meta.blobs import BlobStore
from dockyard.meta.events import EventStore
from dockyard.meta.manifests import PurgeTarget
from dockyard.meta.stores import Stores
from dockyard.meta.manifests import ManifestStore
from dockyard.meta.repositories import RepositoryStore
from dockyard.meta.tags import TagStore
from dockyard.meta.trash import TrashStore
from dockyard.validate import check_digest, check_reference, is_digest_reference

log = logging.getLogger(__name__)


def trash_manifests(conn, cfg, repo_id: int, targets: list[PurgeTarget], now: float, actor: str | None) -> list:
    """The one delete path for images (API, repository delete, prune): their tags go to the
    trash and they turn pending_delete; without ``delayed_delete`` they are purged at once.
    Returns the tags removed."""
    ids = [t.id for t in targets]
    removed = TagStore(conn).delete_for_manifests(repo_id, ids, now, actor)
    if cfg.delayed_delete:
        TrashStore(conn).add_tags(repo_id, removed, now, actor, now + cfg.scrub_time, with_manifest=True)
        ManifestStore(conn).mark_pending_delete(ids, now, actor, now + cfg.scrub_time)
    else:
        purge_manifests(conn, targets, now, GcOptions.from_config(cfg).purge, actor=actor)
    return removed


def delete_manifest(reg, name: str, reference: str, actor: str | None = None) -> None:
    """By tag: untag (the tag goes to the trash). By digest: the image turns pending_delete
    and its tags go to the trash with it; without ``delayed_delete`` it is purged at once.
    Either way no data is deleted here."""
    ref = check_reference(reference)
    now = reg.now()
    cfg = reg.config
    with reg.db.write() as conn:
        repo = RepositoryStore(conn).require(name)
        tags = TagStore(conn)
        if not is_digest_reference(ref):
            if tags.get(repo.id, ref) is None:
                raise manifest_unknown(reference)
            check_mutable(conn, cfg, name, [ref])
            removed_tag = tags.delete(repo.id, ref, now, actor)
            if cfg.delayed_delete:
                TrashStore(conn).add_tags(repo.id, [removed_tag], now, actor, now + cfg.scrub_time,
                                          with_manifest=False)
            if cfg.delete_untagged:
                Stores(conn).reviews.add_manifests([removed_tag.manifest_id], now + cfg.gc_delay, "untagged")
            EventStore(conn).record("delete", name, {"tag": ref, "digest": removed_tag.digest}, now, actor)
            log.info("tag %s:%s deleted by %s", name, ref, actor or "-")
            return
        store = ManifestStore(conn)
        manifest = store.get(repo.id, ref, lock=True)  # a push of the same manifest waits for us, or we for it
        if manifest is None:
            raise manifest_unknown(reference)
        faults.point("manifests.delete_locked")
        parents = store.active_parents(repo.id, manifest.digest)
        if parents:
            raise RegistryError("DENIED", "manifest is a child of an index in use; delete the index first",
                                {"digest": manifest.digest, "indexes": parents[:10]})
        check_mutable(conn, cfg, name, tags.names_of(repo.id, [manifest.id]))
        removed = trash_manifests(conn, cfg, repo.id, [PurgeTarget(manifest.id, repo.id, manifest.digest)], now,
                                  actor)
        EventStore(conn).record("delete", name, {"digest": manifest.digest, "tags": [t.name for t in removed],
                                                 "purged": not cfg.delayed_delete}, now, actor)
    log.info("manifest %s@%s deleted by %s (tags: %s)%s", name, ref, actor or "-",
             ",".join(t.name for t in removed) or "none", "" if cfg.delayed_delete else ", purged")


def unlink_blob(reg, name: str, digest: str, actor: str | None = None) -> None:
    """Remove the repository's link to the blob. The data stays for the collector."""
    d = str(check_digest(digest))
    with reg.db.write() as conn:
        repo = RepositoryStore(conn).require(name)
        if not BlobStore(conn).unlink(repo.id, d):
            raise blob_unknown(d)
        queue = Stores(conn)
        queue.reviews.add_blobs([d], reg.now() + reg.config.gc_delay, "unlinked")
        queue.reviews.add_repositories([repo.id], reg.now() + reg.config.gc_delay)
        quotas.credit(conn, reg.config.quotas, [(repo.id, d)], reg.now())
        EventStore(conn).record("delete", name, {"blob": d}, reg.now(), actor)
    log.info("unlinked blob %s from %s", d, name)


@dataclass(frozen=True, slots=True)
class RepositoryDeleted:
    name: str
    manifests: int
    tags: int
    hosts_holding: tuple[str, ...] = ()
    """Hosts (dockyard agent) whose last inventory still holds an image of the repository: never
    deleted by this, never left unaccounted for."""


def delete_repository(reg, name: str, actor: str | None = None) -> RepositoryDeleted:
    """Hide the repository: its tags go to history, its manifests turn pending_delete.

    No data is deleted here; links and blobs are left for the reclamation pipeline.
    """
    now = reg.now()
    cfg = reg.config
    with reg.db.write() as conn:
        repo = RepositoryStore(conn).require(name)
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
        EventStore(conn).record("delete", name, {"scope": "repository", "manifests": count, "tags": len(removed)},
                                now, actor)
        holders = tuple(HostStore(conn).holders_of_repository(name))
    log.info("repository %s deleted by %s: %d manifests, %d tags%s", name, actor or "-", count, len(removed),
             f"; hosts still holding images of it: {', '.join(holders)}" if holders else "")
    return RepositoryDeleted(name, count, len(removed), holders)
