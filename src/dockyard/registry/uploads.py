"""Upload sessions: start, stream chunks, report status, finish (verify + commit), cancel.

The bytes of a session are staged at ``uploads/<id>``. Finishing hashes them (or takes
the hash computed while they streamed), compares with the client's digest, and only
then moves them to ``blobs/<alg>/<xx>/<hex>`` and writes the blob row and the link in
one transaction. A crash or a wrong digest leaves no visible blob; a crash between
the move and the commit leaves data without a row, which ``fsck`` reclaims.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Iterable, Iterator

from dockyard.errors import RegistryError, digest_invalid, upload_unknown
from dockyard.meta.blobs import Blob, BlobStore
from dockyard.meta.gc import QueueStore
from dockyard.meta.schema import COMMITTING, READY
from dockyard.meta.repositories import RepositoryStore
from dockyard.meta.uploads import Upload, UploadStore
from dockyard.registry.common import check_digest
from dockyard.registry.context import Registry
from dockyard.storage import paths

log = logging.getLogger(__name__)
TOMBSTONE_WAIT = 90.0  # longer than the collector's lease: a dead collector's claim expires first


def start(reg: Registry, name: str) -> Upload:
    upload_id = paths.new_upload_id()
    reg.storage.write_at(paths.upload_key(upload_id), 0, ())
    with reg.db.write() as conn:
        repo = RepositoryStore(conn).ensure(name, reg.now())
        return UploadStore(conn).create(upload_id, repo.id, reg.now())


def get(reg: Registry, name: str, upload_id: str) -> Upload:
    if not paths.is_upload_id(upload_id):
        raise upload_unknown(upload_id)
    with reg.db.read() as conn:
        upload = UploadStore(conn).get(upload_id)
        repo = RepositoryStore(conn).get(name) if upload else None
    if upload is None or repo is None or repo.id != upload.repository_id:
        raise upload_unknown(upload_id)
    return upload


def _hashing(chunks: Iterable[bytes], hasher, counter: list[int]) -> Iterator[bytes]:
    for chunk in chunks:
        if hasher is not None:
            hasher.update(chunk)
        counter[0] += len(chunk)
        yield chunk


def write(reg: Registry, upload: Upload, chunks: Iterable[bytes], expected_length: int | None = None) -> Upload:
    """Append ``chunks`` at the session's current end; returns the session with its new size."""
    hasher = reg.hashers.take(upload.id, upload.size)
    counter = [0]
    new_size = reg.storage.write_at(paths.upload_key(upload.id), upload.size, _hashing(chunks, hasher, counter))
    if expected_length is not None and counter[0] != expected_length:
        raise RegistryError("SIZE_INVALID", "body length does not match Content-Length or Content-Range",
                            {"expected": expected_length, "received": counter[0]})
    with reg.db.write() as conn:
        if not UploadStore(conn).advance(upload.id, upload.size, new_size, reg.now()):
            raise RegistryError("BLOB_UPLOAD_INVALID", "upload was changed by a concurrent request",
                                {"upload": upload.id})
    if hasher is not None:
        reg.hashers.put(upload.id, new_size, hasher)
    return Upload(upload.id, upload.repository_id, new_size, upload.created_at)


def _rehash(reg: Registry, upload: Upload, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    for chunk in reg.storage.read(paths.upload_key(upload.id)):
        h.update(chunk)
    return h.hexdigest()


def finish(reg: Registry, name: str, upload: Upload, digest: str | None) -> Blob:
    """Verify the staged bytes and commit them as a blob of the repository.

    Serialised with the collector on the blob row: if the registry already holds the
    blob, linking it protects it. If the collector removed the row and its tombstone still
    waits, the push cancels the tombstone (the data is kept); if a collector is deleting
    that data right now (a live lease), the push waits until the delete is done. Then the
    row is written as ``committing`` (invisible, skipped by the collector), the staged data
    is moved into place, and the row turns ``ready``.
    """
    if not digest:
        raise digest_invalid("digest parameter is required to finish an upload")
    d = check_digest(digest)
    hasher = reg.hashers.take(upload.id, upload.size) if d.algorithm == "sha256" else None
    actual = hasher.hexdigest() if hasher is not None else _rehash(reg, upload, d.algorithm)
    if actual != d.hex:
        cancel(reg, name, upload.id)
        raise digest_invalid("provided digest did not match uploaded content", str(d))
    digest = str(d)
    staged = paths.upload_key(upload.id)
    deadline = time.monotonic() + TOMBSTONE_WAIT
    while True:
        with reg.db.write() as conn:
            now = reg.now()
            store = BlobStore(conn)
            queue = QueueStore(conn)
            if UploadStore(conn).get(upload.id) is None:
                raise upload_unknown(upload.id)
            row = queue.lock_blob(digest)
            if row is None and queue.cancel_idle_tombstone(digest, now) == "busy":
                waiting = True
            else:
                waiting = False
                ready = row is not None and row.state == READY
                if row is None:
                    store.add(digest, upload.size, now, state=COMMITTING)
                store.link(upload.repository_id, [digest], now)
                queue.review_links(upload.repository_id, [digest], now + reg.config.gc_delay, "uploaded")
                UploadStore(conn).delete(upload.id)
        if not waiting:
            break
        if time.monotonic() > deadline:
            log.warning("push of %s to %s gave up waiting for a tombstone", digest, name)
            raise RegistryError("TOOMANYREQUESTS", "blob is being garbage collected; retry the upload",
                                {"digest": digest})
        time.sleep(0.05)
    if ready:
        reg.storage.delete(staged)  # the registry already holds these bytes
    else:
        reg.storage.move(staged, paths.blob_key(d))
        with reg.db.write() as conn:
            BlobStore(conn).mark_ready(digest)
    log.info("blob %s committed (%d bytes) to %s", digest, upload.size, name)
    return Blob(digest, upload.size)


def cancel(reg: Registry, name: str, upload_id: str) -> None:
    upload = get(reg, name, upload_id)
    reg.hashers.drop(upload.id)
    with reg.db.write() as conn:
        UploadStore(conn).delete(upload.id)
    reg.storage.delete(paths.upload_key(upload.id))
