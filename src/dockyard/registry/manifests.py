"""Manifest reads (with media-type negotiation) and pushes. Deletes are in ``lifecycle.deletes``."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from dockyard.errors import RegistryError, digest_invalid, manifest_unknown
from dockyard.lifecycle import quotas
from dockyard.lifecycle.deletes import check_mutable
from dockyard.meta.blobs import BlobStore
from dockyard.meta.events import EventStore
from dockyard.meta.stores import Stores
from dockyard.meta.trash import TrashStore
from dockyard.meta.manifests import Manifest, ManifestStore
from dockyard.meta.repositories import RepositoryStore
from dockyard.meta.tags import TagStore
from dockyard.oci import mediatypes as mt
from dockyard.oci.digest import compute
from dockyard.oci.manifest import ManifestInvalid, parse
from dockyard.validate import check_reference, is_digest_reference
from dockyard.registry.context import Registry

log = logging.getLogger(__name__)

DEFAULT_PLATFORM = {"os": "linux", "architecture": "amd64"}


def _accepts(accept: list[str] | None, media_type: str) -> bool:
    return not accept or media_type in accept or "*/*" in accept


def get(reg: Registry, name: str, reference: str, accept: list[str] | None = None) -> Manifest:
    """The active manifest ``reference`` (tag or digest) names, with its payload.

    An index asked for by tag by a client that accepts only image manifests gets the
    linux/amd64 image instead, as the reference registry does for old clients.
    """
    ref = check_reference(reference)
    with reg.db.read() as conn:
        store = ManifestStore(conn)
        by_digest = is_digest_reference(ref)
        manifest = store.lookup(name, digest=ref) if by_digest else store.lookup(name, tag=ref)
        if manifest is None:
            RepositoryStore(conn).require(name)  # NAME_UNKNOWN if it is the repository that is missing
            raise manifest_unknown(reference)
        repo_id = manifest.repository_id
        if (not is_digest_reference(ref) and manifest.media_type in mt.INDEXES
                and not _accepts(accept, manifest.media_type)
                and any(_accepts(accept, t) for t in mt.IMAGE_MANIFESTS)):
            child = _platform_child(manifest.payload)
            if child:
                found = store.get(repo_id, child, payload=True)
                if found is not None and _accepts(accept, found.media_type):
                    return found
        return manifest


def _platform_child(payload: bytes | None) -> str | None:
    try:
        for entry in json.loads(payload or b"{}").get("manifests", []):
            platform = entry.get("platform") or {}
            if all(platform.get(k) == v for k, v in DEFAULT_PLATFORM.items()):
                return entry.get("digest")
    except (ValueError, AttributeError):
        return None
    return None


@dataclass(frozen=True, slots=True)
class PutResult:
    manifest: Manifest
    subject: str | None


def put(reg: Registry, name: str, reference: str, payload: bytes, content_type: str | None,
        actor: str | None = None) -> PutResult:
    ref = check_reference(reference, for_write=True)
    try:
        parsed = parse(payload, content_type)
    except ManifestInvalid as exc:
        raise RegistryError("MANIFEST_INVALID", "manifest invalid", {"reason": str(exc)}) from exc
    if is_digest_reference(ref):
        algorithm = ref.split(":", 1)[0]
        digest = str(compute(payload, algorithm))
        if digest != ref:
            raise digest_invalid("manifest digest does not match the reference", ref)
        tag = None
    else:
        digest = str(compute(payload))
        tag = ref
    now = reg.now()

    def body(conn):  # one body of a group transaction (Database.run): may share its COMMIT
        repo = RepositoryStore(conn).ensure(name, now)
        quotas.check_room(conn, reg, name)
        have = BlobStore(conn).linked_among(repo.id, (d.digest for d in parsed.blobs))
        missing = [d.digest for d in parsed.blobs if d.digest not in have]
        if missing:
            raise RegistryError("MANIFEST_BLOB_UNKNOWN", "manifest references a blob unknown to the repository",
                                {"digest": missing[0], "missing": len(missing)})
        store = ManifestStore(conn)
        children = store.active_among(repo.id, (d.digest for d in parsed.children), lock=True)
        absent = [d.digest for d in parsed.children if d.digest not in children]
        if absent:
            raise RegistryError("MANIFEST_BLOB_UNKNOWN", "index references a manifest unknown to the repository",
                                {"digest": absent[0], "missing": len(absent)})
        current = None
        if tag is not None:
            current = TagStore(conn).get(repo.id, tag)
            if current is not None and current.digest != digest:
                check_mutable(conn, reg.config, name, [tag])
        manifest, revived = store.put(repo.id, digest, parsed, payload, now)
        if revived:  # pushed again while in the trash: it is live, so it leaves the trash
            TrashStore(conn).drop_for_manifests([manifest.id])
        queue = Stores(conn)
        if tag is not None:
            previous = TagStore(conn).set(repo.id, tag, manifest.id, digest, now, actor, current=current)
            if previous is not None and reg.config.delete_untagged:
                queue.reviews.add_manifests([previous], now + reg.config.gc_delay, "untagged")
        elif reg.config.delete_untagged or parsed.subject is not None:
            queue.reviews.add_manifests([manifest.id], now + reg.config.gc_delay, "pushed_untagged")
        EventStore(conn).record("push", name, {"digest": digest, "tag": tag, "media_type": manifest.media_type,
                                               "size": len(payload)}, now, actor)
        return manifest

    manifest = reg.db.run(body)
    log.info("manifest %s pushed to %s%s", digest, name, f":{tag}" if tag else "")
    return PutResult(manifest, parsed.subject.digest if parsed.subject else None)
