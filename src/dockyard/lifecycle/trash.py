"""The trash: listing deleted images and tags, restoring them, purging one before its time."""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field

from dockyard.errors import Conflict, RegistryError
from dockyard.lifecycle.collector import GcOptions
from dockyard.lifecycle.purge import purge_manifests
from dockyard.meta.blobs import BlobStore
from dockyard.lifecycle import quotas
from dockyard.meta.events import EventStore
from dockyard.meta.manifests import PurgeTarget
from dockyard.meta.stores import Stores
from dockyard.meta.manifests import ManifestStore
from dockyard.meta.repositories import RepositoryStore
from dockyard.meta.schema import ACTIVE
from dockyard.meta.tags import TagStore
from dockyard.meta.trash import TrashStore
from dockyard.oci.references import ImageRef, InvalidReference, parse_reference

log = logging.getLogger(__name__)


def parse_target(text: str) -> ImageRef:
    """What restore and purge act on: ``repo@sha256:...`` or ``repo:tag`` (the one reference
    grammar of ``oci.references``, without a host, with exactly one of tag and digest)."""
    try:
        ref = parse_reference(text)
    except InvalidReference as exc:
        raise RegistryError("NAME_INVALID", "reference must be <repository>@<digest> or <repository>:<tag>",
                            {"reference": text, "reason": str(exc)}) from exc
    if ref.host or (ref.tag is None) == (ref.digest is None):
        raise RegistryError("NAME_INVALID", "reference must be <repository>@<digest> or <repository>:<tag>",
                            {"reference": text})
    return ref


_SHORT = re.compile(r"^(?P<repository>[^@]+)@(?P<algorithm>sha256|sha512):(?P<hex>[0-9a-f]+)$")
_FULL_HEX = {"sha256": 64, "sha512": 128}
MIN_SHORT_HEX = 12
"""A short digest (as ``dockyard trash list`` prints them) has at least this many hex digits."""


def expand_short(reg, text: str, min_hex: int = MIN_SHORT_HEX) -> str:
    """``repo@sha256:0123456789ab`` -> ``repo@<the full digest>``: the one image of the repository
    whose digest starts so (trashed ones first); any other reference is returned unchanged.

    Too short, unknown or ambiguous: a RegistryError that says so (the candidates listed)."""
    m = _SHORT.match(text)
    if not m or len(m["hex"]) >= _FULL_HEX[m["algorithm"]]:
        return text
    if len(m["hex"]) < min_hex:
        raise RegistryError("DIGEST_INVALID", f"a short digest needs at least {min_hex} hex digits "
                            f"after {m['algorithm']}: (as dockyard trash list prints them)", {"reference": text})
    prefix = f"{m['algorithm']}:{m['hex']}"
    with reg.db.read() as conn:
        repo = RepositoryStore(conn).get(m["repository"], include_deleted=True)
        found = TrashStore(conn).digests_with_prefix(repo.id, prefix) if repo else []
    trashed = [d for d, state in found if state != ACTIVE]
    chosen = trashed or [d for d, _ in found]
    if not chosen:
        raise RegistryError("MANIFEST_UNKNOWN", f"no image of {m['repository']} has a digest starting with {prefix}",
                            {"reference": text})
    if len(chosen) > 1:
        raise RegistryError("DIGEST_INVALID", f"{prefix} is ambiguous: {len(chosen)}"
                            f"{'+' if len(found) >= 50 else ''} images of {m['repository']} start with it; "
                            "give more of the digest", {"candidates": chosen[:20]})
    return f"{m['repository']}@{chosen[0]}"


def listing(reg, repository: str | None = None, limit: int = 1000) -> dict:
    now = reg.now()
    with reg.db.read() as conn:
        trash = TrashStore(conn)
        images = trash.images(repository=repository, limit=limit)
        tags = trash.tags(repository=repository, limit=limit)
    return {
        "images": [{**{k: v for k, v in asdict(i).items() if k not in ("repository_id", "manifest_id")},
                    "seconds_left": max(0.0, i.scrub_after - now)} for i in images],
        "tags": [{"repository": t.repository, "tag": t.tag, "digest": t.digest, "deleted_at": t.deleted_at,
                  "deleted_by": t.deleted_by, "scrub_after": t.scrub_after,
                  "seconds_left": max(0.0, t.scrub_after - now)} for t in tags],
    }


@dataclass
class RestoreResult:
    reference: str
    digest: str
    restored_tags: list[str] = field(default_factory=list)
    skipped_tags: dict[str, str] = field(default_factory=dict)
    """Tags that were not restored, with why (typically: moved to another image since)."""
    restored_manifests: int = 0


def restore(reg, text: str, actor: str | None = None) -> RestoreResult:
    """Restore ``repo@digest`` (a short digest will do, see :func:`expand_short`) or ``repo:tag``."""
    ref = parse_target(expand_short(reg, text))
    now = reg.now()
    with reg.db.write() as conn:
        repos = RepositoryStore(conn)
        repo = repos.get(ref.repository, include_deleted=True)
        if repo is None:
            raise RegistryError("NAME_UNKNOWN", "repository not known to registry", {"name": ref.repository})
        trash = TrashStore(conn)
        tags = TagStore(conn)
        reviews: list[int] = []
        if ref.digest is None:
            entry = trash.latest_trashed_tag(repo.id, ref.tag)
            if entry is None:
                raise RegistryError("MANIFEST_UNKNOWN", "no such tag in the trash", {"reference": str(ref)})
            digest = ManifestStore(conn).digest_of(entry.manifest_id)
            image = trash.lock_pending(repo.id, digest)
            if entry.with_manifest or image.state != ACTIVE:
                # a tag deleted on its own, then its image: the image comes back too (with the
                # tags deleted with it), or the restore fails; never a tag on a deleted image
                result = _restore_image(conn, reg, repo.id, digest, actor, now, str(ref), reviews)
            else:
                result = RestoreResult(str(ref), digest)
            if not entry.with_manifest:
                current = tags.get(repo.id, ref.tag)
                if current is not None and current.digest != digest:
                    result.skipped_tags[ref.tag] = f"now points at {current.digest}"
                else:
                    if current is None:
                        tags.set(repo.id, ref.tag, entry.manifest_id, digest, now, actor)
                    if ref.tag not in result.restored_tags:
                        result.restored_tags.append(ref.tag)
                trash.drop([entry.id])
                reviews.append(entry.manifest_id)  # it lost the trashed tag that kept it
        else:
            result = _restore_image(conn, reg, repo.id, ref.digest, actor, now, str(ref), reviews)
        # a restored image may be kept by nothing now (its tags moved; its subject was purged):
        # the collector decides, after the usual grace
        Stores(conn).reviews.add_manifests(reviews, now + reg.config.gc_delay, "restored")
        if repo.deleted_at is not None:
            repos.ensure(ref.repository, now)
        EventStore(conn).record("restore", ref.repository, {"reference": str(ref), "digest": result.digest,
                                                            "tags": result.restored_tags}, now, actor)
    log.info("restored %s (tags %s; not restored: %s) by %s", result.reference, ",".join(result.restored_tags) or "-",
             "; ".join(f"{t} {why}" for t, why in result.skipped_tags.items()) or "-", actor or "-")
    return result


def _restore_image(conn, reg, repo_id: int, digest: str, actor, now: float, label: str,
                   restored_ids: list[int]) -> RestoreResult:
    trash = TrashStore(conn)
    row = trash.lock_pending(repo_id, digest)
    if row is None:
        raise RegistryError("MANIFEST_UNKNOWN", "image is not in the trash: it was purged or never existed",
                            {"reference": label})
    result = RestoreResult(label, digest)
    if row.state == ACTIVE:
        raise RegistryError("MANIFEST_INVALID", "image is not deleted", {"reference": label})
    _activate_tree(conn, reg, repo_id, row.id, digest, now, result, restored_ids)
    tags = TagStore(conn)
    entries = trash.tags_of(row.id, with_manifest=True)
    for _, tag in entries:
        current = tags.get(repo_id, tag)
        if current is not None:
            result.skipped_tags[tag] = f"now points at {current.digest}"
        else:
            tags.set(repo_id, tag, row.id, digest, now, actor)
            result.restored_tags.append(tag)
    trash.drop([i for i, _ in entries])
    return result


def _activate_tree(conn, reg, repo_id: int, manifest_id: int, digest: str, now: float,
                   result: RestoreResult, restored_ids: list[int]) -> None:
    """Activate the manifest and every pending child it needs; re-link its blobs.

    Fails (rolling everything back) if a child is gone: never an active image with
    missing content.
    """

    trash = TrashStore(conn)
    store = ManifestStore(conn)
    trash.activate(manifest_id)
    restored_ids.append(manifest_id)
    result.restored_manifests += 1
    refs = store.references(manifest_id)
    blobs = [d for k, d in refs if k == "blob"]
    if blobs:
        quotas.charge(conn, reg, repo_id, blobs, now, enforce=False)  # restored content is not refused
        BlobStore(conn).link(repo_id, blobs, now)
    for kind, child in refs:
        if kind != "manifest":
            continue
        row = trash.lock_pending(repo_id, child)
        if row is None:
            raise RegistryError("MANIFEST_UNKNOWN", "a child manifest of this index was purged; cannot restore",
                                {"child": child, "digest": digest})
        if row.state != ACTIVE:
            _activate_tree(conn, reg, repo_id, row.id, child, now, result, restored_ids)


@dataclass
class PurgeResult:
    reference: str
    dry_run: bool
    bytes_freed: int
    freed_after_seconds: float = 0.0
    """The data goes with the first collection this long after the purge (gc_delay)."""
    gc_interval_seconds: float = 0.0


def purge(reg, text: str, *, dry_run: bool = False, actor: str | None = None) -> PurgeResult:
    """Purge one trashed image now; its data goes with the first collection after gc_delay."""
    text = expand_short(reg, text)
    ref = parse_target(text)
    if ref.digest is None:
        raise RegistryError("UNSUPPORTED", "purge takes <repository>@<digest>", {"reference": text})
    now = reg.now()
    with reg.db.write() as conn:
        repo = RepositoryStore(conn).get(ref.repository, include_deleted=True)
        row = TrashStore(conn).lock_pending(repo.id, ref.digest) if repo else None
        if row is None or row.state == ACTIVE:
            raise RegistryError("MANIFEST_UNKNOWN", "image is not in the trash", {"reference": text})
        holders = [p.id for p in Stores(conn).manifests.parents_of([(repo.id, ref.digest)]).get((repo.id, ref.digest), [])
                   if p.id != row.id]
        if holders:  # purging it would leave that index broken, or unrestorable
            raise Conflict("DENIED", "an index of the repository (live, or in the trash) references this "
                           "image; purge or restore the index instead", {"reference": text})
        freed = TrashStore(conn).bytes_freed(row.id, repo.id)
        if not dry_run:
            purge_manifests(conn, [PurgeTarget(row.id, repo.id, ref.digest)], now,
                            GcOptions.from_config(reg.config).purge, actor=actor)
            EventStore(conn).record("purge", ref.repository, {"digest": ref.digest, "bytes": freed}, now, actor)
    if not dry_run:
        log.info("purged %s from the trash by %s (%d bytes to be freed)", text, actor or "-", freed)
    return PurgeResult(text, dry_run, freed, reg.config.gc_delay, reg.config.gc_interval)
