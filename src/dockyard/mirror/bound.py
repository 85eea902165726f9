"""The bound of mirrored content (``mirror_max_size``), reports, and evictions.

The size of mirrored content is the sum of the mirrored images' sizes (an image: its
manifest, its blobs and, for an index, its children's; a blob two mirrored images share
counts twice, so the bound errs on the safe side). Above the bound the least recently pulled
images are evicted (the pull times this process holds in memory are written first, so a pull
a moment ago counts, not only those of the last ``pull_flush_interval``) (``lru.victims``, the rule the blob cache uses too) through the one
reclamation pipeline: the image is purged at once (``lifecycle.deletes.trash_manifests``
without the trash) and the collector reclaims its blobs after ``gc_delay``, keeping every
blob another repository still links (a local image's layer stays). An evicted image is
fetched again on its next pull.
"""

from __future__ import annotations

import dataclasses
import logging
import threading

from dockyard import lru
from dockyard.errors import RegistryError
from dockyard.lifecycle.deletes import trash_manifests
from dockyard.lifecycle.trash import parse_target
from dockyard.meta.manifests import PurgeTarget
from dockyard.meta.mirror import MirroredImage, MirrorStore
from dockyard.registry.context import Registry
from dockyard.registry.manifests import get
from dockyard.validate import is_digest_reference

log = logging.getLogger(__name__)
_enforcing = threading.Lock()


def images(reg: Registry, prefixes: dict[str, str]) -> dict[str, list[MirroredImage]]:
    """Mirrored images per mirror name, least recently used first."""
    with reg.db.read() as conn:
        store = MirrorStore(conn)
        return {name: store.images(prefix) for name, prefix in prefixes.items()}


def listing(reg: Registry, prefixes: dict[str, str], states: dict | None = None) -> dict:
    """Each upstream with its state (when this process knows it), bytes mirrored and images."""
    held = images(reg, prefixes)
    out = []
    for name, prefix in prefixes.items():
        row = {"name": name, "prefix": prefix, "url": reg.config.mirrors[name]["url"],
               "images": len(held[name]), "bytes": sum(i.size for i in held[name])}
        state = (states or {}).get(name)
        if state is not None:
            row.update(reachable=state.reachable, last_error=state.last_error, last_contact=state.last_contact)
        out.append(row)
    return {"mirrors": out, "max_size": reg.config.mirror_max_size,
            "bytes": sum(r["bytes"] for r in out)}


def plan(reg: Registry, prefixes: dict[str, str], target: int | None = None,
         busy: set[str] = frozenset()) -> tuple[list[MirroredImage], int]:
    """Images to evict to get down to ``target`` (default ``mirror_max_size``), and the total now."""
    everything = sorted((i for held in images(reg, prefixes).values() for i in held),
                        key=lambda i: (i.last_used, i.manifest_id))
    total = sum(i.size for i in everything)
    target = reg.config.mirror_max_size if target is None else target
    by_key = {f"{i.repository}@{i.digest}": i for i in everything}
    entries = (lru.Entry(key, i.size, i.last_used, in_use=key in busy) for key, i in by_key.items())
    return [by_key[e.key] for e in lru.victims(entries, total, target)], total


def evict(reg: Registry, victims: list[MirroredImage], *, dry_run: bool, reason: str) -> dict:
    """Purge ``victims`` (reclaimed by the collector); a log line per image; a report."""
    cfg = dataclasses.replace(reg.config, delayed_delete=False)
    done = []
    for image in victims:
        if not dry_run:
            targets = [PurgeTarget(image.manifest_id, image.repository_id, image.digest)]
            targets += [PurgeTarget(mid, image.repository_id, d) for mid, d in image.children]
            with reg.db.write() as conn:
                trash_manifests(conn, cfg, image.repository_id, targets, reg.now(), f"mirror-{reason}")
            reg.metrics.inc("dockyard_mirror_evictions_total", reason=reason)
            reg.metrics.inc("dockyard_mirror_evicted_bytes_total", image.size, reason=reason)
        log.info("mirror %s %s@%s (%d bytes)%s", reason, image.repository, image.digest, image.size,
                 " (dry run)" if dry_run else "")
        done.append({"repository": image.repository, "digest": image.digest, "bytes": image.size})
    return {"dry_run": dry_run, "evicted": len(done), "bytes": sum(d["bytes"] for d in done), "images": done}


def prune(reg: Registry, prefixes: dict[str, str], *, dry_run: bool, busy: set[str] = frozenset()) -> dict:
    """Evict least recently pulled images until mirrored content is within ``mirror_max_size``."""
    if not reg.config.mirror_max_size:
        return {"dry_run": dry_run, "evicted": 0, "bytes": 0, "images": [], "total_before": None,
                "max_size": 0}
    reg.pulls.flush(reg.db)  # pulls this process has not written yet count: a pull just now is recent
    victims, total = plan(reg, prefixes, busy=busy)
    report = evict(reg, victims, dry_run=dry_run, reason="prune" if not busy else "bound")
    report.update(total_before=total, max_size=reg.config.mirror_max_size)
    return report


def enforce(reg: Registry, prefixes: dict[str, str], busy: set[str]) -> None:
    """After a store: prune to the bound, one run at a time in this process."""
    if not reg.config.mirror_max_size or not _enforcing.acquire(blocking=False):
        return
    try:
        prune(reg, prefixes, dry_run=False, busy=busy)
    finally:
        _enforcing.release()


def evict_one(reg: Registry, prefixes: dict[str, str], reference: str, *, dry_run: bool) -> dict:
    """Evict the mirrored image ``repo:tag`` or ``repo@digest``."""
    target = parse_target(reference)
    name, ref = target.repository, target.digest or target.tag
    if not any(name.startswith(p) for p in prefixes.values()):
        raise RegistryError("NAME_INVALID", "repository is not under a mirror's prefix", {"repository": name})
    found = [i for held in images(reg, prefixes).values() for i in held if i.repository == name]
    if is_digest_reference(ref):
        found = [i for i in found if i.digest == ref]
    else:
        try:
            digest = get(reg, name, ref).digest
        except RegistryError:
            digest = None
        found = [i for i in found if i.digest == digest]
    if not found:
        raise RegistryError("MANIFEST_UNKNOWN", "no mirrored image at that reference",
                            {"repository": name, "reference": reference})
    return evict(reg, found, dry_run=dry_run, reason="evict")
