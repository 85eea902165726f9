"""Blob reads, cross-repository mounts and link deletes."""

from __future__ import annotations

import logging
from typing import Iterator

from dockyard.errors import RangeNotSatisfiable, blob_unknown
from dockyard.lifecycle import quotas
from dockyard.meta.blobs import Blob, BlobStore, get_linked_by_name
from dockyard.meta.db import DatabaseConflict, DatabaseUnavailable
from dockyard.meta.stores import Stores
from dockyard.meta.repositories import RepositoryStore
from dockyard.validate import check_digest
from dockyard.registry.context import Registry
from dockyard.registry.pulls import Throttled
from dockyard.storage import paths
from dockyard.storage.base import PathNotFound

log = logging.getLogger(__name__)
_postpone_failures = Throttled(log, 60.0)


def stat(reg: Registry, name: str, digest: str) -> Blob:
    """The blob, if the repository links it.

    A client that sees "exists" skips the upload and pushes a manifest next, so a
    pending review of this link that is due soon is pushed back by ``gc_delay``
    first. Postponing takes the review row's lock, so it waits for a collector that
    holds it and then re-reads the link: never "exists" for a link about to vanish.
    """
    d = str(check_digest(digest))
    with reg.db.read() as conn:
        found = get_linked_by_name(conn, name, d)
    if found is not None and found.review_after is not None:
        now = reg.now()
        until = now + reg.config.gc_delay
        if found.review_after < now + reg.config.gc_delay / 2:
            try:
                with reg.db.write() as conn:
                    Stores(conn).reviews.postpone_link(found.repository_id, d, until)
                    found = get_linked_by_name(conn, name, d)
            except DatabaseConflict:
                raise  # rolled back: the request runs again (db.retrying)
            except DatabaseUnavailable as exc:
                # a pull needs no writable database: the postponement is best effort (a
                # collector cannot delete anything through a read-only database either)
                _postpone_failures.warn("cannot postpone link reviews (%s); serving anyway", exc.reason)
    if found is None:
        raise blob_unknown(d)
    return found.blob


def read(reg: Registry, blob: Blob, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
    """The blob's bytes: through this replica's cache when it has one (a hit is served from
    local disk; a miss streams from storage and fills the cache on the way)."""
    try:
        if reg.cache is not None:
            return reg.cache.read(blob.digest, blob.size, offset, length)
        return reg.storage.read(paths.blob_key(blob.digest), offset, length)
    except PathNotFound as exc:
        log.error("blob %s has a row but no data (%s); fsck will report it", blob.digest, exc)
        raise blob_unknown(blob.digest) from exc


def redirect_url(reg: Registry, blob: Blob) -> str | None:
    make = getattr(reg.storage, "redirect_url", None)
    return make(paths.blob_key(blob.digest), int(reg.config.s3_redirect_ttl)) if make else None


def mount(reg: Registry, name: str, digest: str, from_name: str | None) -> Blob | None:
    """Link a blob of ``from_name`` into ``name``; None if it cannot provide it.

    Without ``from_name`` (automatic mount, OCI 1.1) any live repository that links the
    blob provides it: every role that may push may also pull every repository.
    """
    d = str(check_digest(digest))
    with reg.db.write() as conn:
        store = BlobStore(conn)
        if from_name is None:
            blob = store.get_linked_anywhere(d)
        else:
            source = RepositoryStore(conn).get(from_name)
            blob = store.get_linked(source.id, d) if source else None
        if blob is None:
            return None
        repo = RepositoryStore(conn).ensure(name, reg.now())
        quotas.charge(conn, reg, repo.id, {d: blob.size}, reg.now())
        store.link(repo.id, [d], reg.now())
        Stores(conn).reviews.add_links(repo.id, [d], reg.now() + reg.config.gc_delay, "mounted")
    return blob


def range_error(size: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable("SIZE_INVALID", "requested range not satisfiable", size)
