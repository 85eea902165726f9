"""Blob reads, cross-repository mounts and link deletes."""

from __future__ import annotations

import logging
from typing import Iterator

from dockyard.errors import RegistryError, blob_unknown
from dockyard.meta.blobs import Blob, BlobStore, get_linked_by_name
from dockyard.meta.repositories import RepositoryStore
from dockyard.registry.common import check_digest, require_repo
from dockyard.registry.context import Registry
from dockyard.storage import paths
from dockyard.storage.base import PathNotFound

log = logging.getLogger(__name__)


def stat(reg: Registry, name: str, digest: str) -> Blob:
    d = str(check_digest(digest))
    with reg.db.read() as conn:
        blob = get_linked_by_name(conn, name, d)
    if blob is None:
        raise blob_unknown(d)
    return blob


def read(reg: Registry, blob: Blob, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
    try:
        return reg.storage.read(paths.blob_key(blob.digest), offset, length)
    except PathNotFound as exc:
        log.error("blob %s has a row but no data (%s); fsck will report it", blob.digest, exc)
        raise blob_unknown(blob.digest) from exc


def local_path(reg: Registry, blob: Blob) -> str | None:
    return reg.storage.local_path(paths.blob_key(blob.digest))


def mount(reg: Registry, name: str, digest: str, from_name: str) -> Blob | None:
    """Link a blob of ``from_name`` into ``name``; None if ``from_name`` cannot provide it."""
    d = str(check_digest(digest))
    with reg.db.write() as conn:
        source = RepositoryStore(conn).get(from_name)
        if source is None:
            return None
        store = BlobStore(conn)
        blob = store.get_linked(source.id, d)
        if blob is None:
            return None
        repo = RepositoryStore(conn).ensure(name, reg.now())
        store.link(repo.id, [d], reg.now())
    return blob


def delete(reg: Registry, name: str, digest: str) -> None:
    """Remove the repository's link to the blob. The data stays for the collector."""
    d = str(check_digest(digest))
    with reg.db.write() as conn:
        repo = require_repo(conn, name)
        if not BlobStore(conn).unlink(repo.id, d):
            raise blob_unknown(d)
    log.info("unlinked blob %s from %s", d, name)


def range_error(size: int) -> RegistryError:
    return RegistryError("SIZE_INVALID", "requested range not satisfiable", {"size": size}, status=416,
                         headers={"Content-Range": f"bytes */{size}"})
