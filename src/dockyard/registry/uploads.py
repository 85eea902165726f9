"""Upload sessions: start, stream chunks, report status, finish (verify + commit), cancel.

The bytes of a session are staged at ``uploads/<id>``; the session row holds how many of
them were acknowledged. Invariant: the staged data a commit uses is exactly the
acknowledged bytes.

- One writer per session: every request that writes (PATCH, PUT, cancel) first claims the
  row (a token and a lease it renews while it streams). A second request on the session
  meanwhile is refused (409 BLOB_UPLOAD_INVALID) and changes nothing.
- A write never goes past what its request announced, and a request that fails truncates
  the staged data back to the acknowledged size before it lets go of its claim; a process
  that dies mid-write leaves bytes past that size, which the next writer or the commit
  cuts off (``write_at`` at the acknowledged offset discards everything after it).
- Finishing truncates the staged data to the acknowledged size, checks its size, hashes
  exactly those bytes (or takes the hash computed while they streamed, here or by the
  producer of a whole blob, ``StreamHash``, if it counted exactly those bytes), and only then
  moves them to ``blobs/<alg>/<xx>/<hex>`` and writes the blob row and the link.
- No request deletes storage: the staged data of a finished, failed or cancelled session
  gets a tombstone in the transaction that removes the session row, and the collector
  deletes it (promptly, with its pool, retries and rate limit). A crash between the move
  and the row leaves a ``committing`` row the collector reviews, or data ``fsck`` reclaims.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from functools import partial
from typing import Iterable, Iterator

from dockyard import faults
from dockyard.errors import Conflict, RegistryError, Unavailable, UploadOutOfOrder, digest_invalid, upload_unknown
from dockyard.lifecycle import quotas
from dockyard.meta.blobs import Blob, BlobStore
from dockyard.meta.db import retrying
from dockyard.meta.stores import Stores
from dockyard.meta.schema import COMMITTING, READY
from dockyard.meta.repositories import RepositoryStore
from dockyard.meta.uploads import Upload, UploadStore
from dockyard.oci.digest import Digest
from dockyard.validate import check_digest
from dockyard.registry.context import Registry
from dockyard.storage import paths

log = logging.getLogger(__name__)
TOMBSTONE_WAIT = 90.0  # longer than the collector's lease: a dead collector's claim expires first
CLAIM_LEASE = 60.0  # a writer that has not renewed for this long is taken to be dead
RENEW_EVERY = 10.0  # seconds between renewals while a body streams


def _room_for_uploads(reg: Registry) -> None:
    if reg.reserve is not None and reg.reserve.refuses_uploads():
        raise Unavailable("the registry's disk is full; uploads resume once space is reclaimed", retry_after=60)


def start(reg: Registry, name: str) -> Upload:
    """A new session: a row only (the staged object appears with the first write, so a
    failure here leaves nothing in storage)."""
    _room_for_uploads(reg)
    # a synced write that shares its transaction with those of concurrent requests (Database.run)
    return reg.db.run(partial(_start_session, reg, name, paths.new_upload_id()))


def _start_session(reg: Registry, name: str, upload_id: str, conn) -> Upload:
    now = reg.now()
    return UploadStore(conn).create(upload_id, RepositoryStore(conn).ensure(name, now).id, now)


def get(reg: Registry, name: str, upload_id: str) -> Upload:
    if not paths.is_upload_id(upload_id):
        raise upload_unknown(upload_id)
    with reg.db.read() as conn:
        upload = UploadStore(conn).get(upload_id)
        repo = RepositoryStore(conn).get(name) if upload else None
    if upload is None or repo is None or repo.id != upload.repository_id:
        raise upload_unknown(upload_id)
    return upload


class _Claim:
    """This request's claim on a session: taken on entry, renewed while bytes stream,
    released (with the new acknowledged size, or none) on the way out. Taking and renewing
    it do not wait for the disk (``write(sync=False)``): nothing is acknowledged on the
    strength of a claim, and the release or commit that ends the request is synced, which
    syncs them too; a claim lost to a power cut is simply no claim."""

    def __init__(self, reg: Registry, upload_id: str):
        self.reg = reg
        self.upload_id = upload_id
        self.token = secrets.token_hex(16)
        self.renewed = 0.0

    def create(self, name: str) -> Upload:
        """A new session, claimed by this request from the start (a whole blob in one request)."""
        upload = self.reg.db.run(partial(self._create, name), sync=False)
        self.renewed = time.monotonic()
        return upload

    def _create(self, name: str, conn) -> Upload:
        now = self.reg.now()
        repo = RepositoryStore(conn).ensure(name, now)
        return UploadStore(conn).create(self.upload_id, repo.id, now, writer=self.token,
                                        writer_until=now + CLAIM_LEASE)

    def take(self, name: str | None = None) -> Upload:
        """Claim the session; with ``name``, only a session of that repository (checked in the
        same transaction, which a mismatch rolls back: a request never claims another's)."""
        upload, claimed = self.reg.db.run(partial(self._take, name), sync=False)
        if upload is None:
            raise upload_unknown(self.upload_id)
        if not claimed:
            raise Conflict("BLOB_UPLOAD_INVALID", "another request is writing to this upload session",
                           {"upload": self.upload_id})
        self.renewed = time.monotonic()
        return upload

    def _take(self, name: str | None, conn) -> tuple[Upload | None, bool]:
        now = self.reg.now()
        upload, claimed = UploadStore(conn).claim(self.upload_id, self.token, now, now + CLAIM_LEASE)
        if upload is not None and name is not None:
            repo = RepositoryStore(conn).get(name)
            if repo is None or repo.id != upload.repository_id:
                raise upload_unknown(self.upload_id)  # rolls the claim back
        return upload, claimed

    def keep(self) -> None:
        """Renew the lease when due; refuse to go on if the claim was lost."""
        if time.monotonic() - self.renewed < RENEW_EVERY:
            return
        now = self.reg.now()
        with self.reg.db.write(sync=False) as conn:
            held = UploadStore(conn).renew(self.upload_id, self.token, now, now + CLAIM_LEASE)
        if not held:
            raise _lost(self.upload_id)
        self.renewed = time.monotonic()

    def release(self, size: int | None = None) -> bool:
        return self.reg.db.run(lambda conn: UploadStore(conn).release(self.upload_id, self.token, self.reg.now(),
                                                                      size))

    def holds(self) -> bool:
        """Whether this request still holds the session (renewing the lease now); False also
        when the database cannot say. A request that lost it must not touch the staged data."""
        try:
            now = self.reg.now()
            with self.reg.db.write(sync=False) as conn:
                return UploadStore(conn).renew(self.upload_id, self.token, now, now + CLAIM_LEASE)
        except Exception as exc:  # on a failure path already: its own error is the one to report
            log.warning("upload %s: could not check its claim: %s", self.upload_id, exc)
            return False

    def release_quietly(self) -> None:
        """Let go on a failure path (best effort: if the database is down too, the lease runs out)."""
        try:
            self.release()
        except Exception as exc:
            log.warning("upload %s: could not release its claim: %s", self.upload_id, exc)


def _lost(upload_id: str) -> RegistryError:
    return Conflict("BLOB_UPLOAD_INVALID", "upload session was taken over or removed by another request",
                    {"upload": upload_id})


def _bounded(chunks: Iterable[bytes], hasher, counter: list[int], limit: int | None,
             claim: _Claim) -> Iterator[bytes]:
    """The body's chunks, hashed and counted, never more than ``limit`` bytes in all; a body
    still streaming when the disk fills stops there (the room freed is for reclamation)."""
    for chunk in chunks:
        if limit is not None and counter[0] + len(chunk) > limit:
            raise RegistryError("SIZE_INVALID", "body is longer than Content-Length or Content-Range",
                                {"expected": limit, "received_at_least": counter[0] + len(chunk)})
        _room_for_uploads(claim.reg)
        claim.keep()
        if hasher is not None:
            hasher.update(chunk)
        counter[0] += len(chunk)
        yield chunk


def _append(reg: Registry, claim: _Claim, upload: Upload, chunks: Iterable[bytes], expected_length: int | None,
            start: int | None, hashed: StreamHash | None = None):
    """Append ``chunks`` at the acknowledged end under a held claim; returns the session with
    its new size (not yet recorded) and the hasher that saw every byte (or None). On failure
    the staged data is cut back to the acknowledged size; the claim stays with the caller.
    With ``hashed`` the producer of ``chunks`` hashes them: no hasher here (None returned)."""
    key = paths.upload_key(upload.id)
    try:
        _room_for_uploads(reg)
        if start is not None and start != upload.size:
            raise UploadOutOfOrder(upload.id, upload.size, start)
        hasher = reg.hashers.take(upload.id, upload.size) if hashed is None else None
        counter = [0]
        new_size = reg.storage.write_at(key, upload.size, _bounded(chunks, hasher, counter, expected_length, claim))
        if expected_length is not None and counter[0] != expected_length:
            raise RegistryError("SIZE_INVALID", "body is shorter than Content-Length or Content-Range",
                                {"expected": expected_length, "received": counter[0]})
        faults.point("uploads.written")
    except BaseException:
        if claim.holds():  # a request that lost the session must not cut another writer's bytes
            _cut_back(reg, key, upload.size)
        raise
    return Upload(upload.id, upload.repository_id, new_size, upload.created_at), hasher


def write(reg: Registry, upload: Upload, chunks: Iterable[bytes], expected_length: int | None = None,
          start: int | None = None) -> Upload:
    """Append ``chunks`` at the session's acknowledged end (PATCH); returns the session with its
    new size. ``start`` (from Content-Range) must be that end. A failed request leaves nothing
    behind: the staged data is cut back to what was acknowledged before."""
    claim = _Claim(reg, upload.id)
    upload = claim.take()
    try:
        upload, hasher = _append(reg, claim, upload, chunks, expected_length, start)
    except BaseException:
        claim.release_quietly()
        raise
    if not claim.release(upload.size):
        raise _lost(upload.id)
    if hasher is not None:
        reg.hashers.put(upload.id, upload.size, hasher)
    return upload


def _cut_back(reg: Registry, key: str, size: int) -> None:
    """Drop staged bytes past the acknowledged ``size`` (best effort: if this fails too, the
    next write or the commit cuts them off)."""
    try:
        reg.storage.write_at(key, size, ())
    except Exception as exc:  # the request is failing already; its own error is the one to report
        log.warning("could not truncate %s back to %d bytes: %s", key, size, exc)


def _rehash(reg: Registry, key: str, size: int, algorithm: str, claim: _Claim) -> str:
    """The digest of exactly the ``size`` acknowledged bytes (the claim renewed meanwhile)."""
    h = hashlib.new(algorithm)
    for chunk in reg.storage.read(key, 0, size):
        claim.keep()
        h.update(chunk)
    return h.hexdigest()


def _staged_exactly(reg: Registry, upload: Upload) -> str:
    """Make the staged object hold exactly the acknowledged bytes; returns its key."""
    key = paths.upload_key(upload.id)
    info = reg.storage.stat(key)
    size = info.size if info is not None else 0
    if info is None or size > upload.size:
        if size < upload.size:
            raise _staging_lost(upload)
        reg.storage.write_at(key, upload.size, ())
    elif size < upload.size:
        raise _staging_lost(upload)
    return key


def _staging_lost(upload: Upload) -> RegistryError:
    log.error("upload %s: staged data is shorter than the %d bytes acknowledged", upload.id, upload.size)
    return RegistryError("BLOB_UPLOAD_INVALID", "staged data of this upload is incomplete; start the upload again",
                         {"upload": upload.id})


def _upload_tombstone(upload: Upload, now: float) -> dict:
    return {"key": paths.upload_key(upload.id), "kind": "upload", "digest": None, "size": upload.size,
            "created_at": now, "next_attempt_at": now}


def finish(reg: Registry, name: str, upload: Upload, digest: str | None, chunks: Iterable[bytes] | None = None,
           expected_length: int | None = None) -> Blob:
    """Append the last ``chunks`` if any (PUT with a body), verify the staged bytes and commit
    them as a blob of the repository, all under one claim of the session."""
    return finish_id(reg, name, upload.id, digest, chunks, expected_length)


def finish_id(reg: Registry, name: str, upload_id: str, digest: str | None, chunks: Iterable[bytes] | None = None,
              expected_length: int | None = None) -> Blob:
    """:func:`finish` by session id (PUT): the check that the session belongs to ``name`` is
    part of the claim's transaction, so a PUT needs no read before it."""
    if not paths.is_upload_id(upload_id):
        raise upload_unknown(upload_id)
    if not digest:
        get(reg, name, upload_id)  # an unknown session is the error to report first
    d = _required_digest(digest)
    claim = _Claim(reg, upload_id)
    return _commit(reg, name, claim, claim.take(name), d, chunks, expected_length)


class StreamHash:
    """A blob's digest computed by whoever produces its chunks, as they stream: ``update``
    each chunk before handing it on. Given to :func:`push_whole`, it is what the commit
    verifies (with the byte count it saw, which must be the size written), so bytes that
    were hashed on their way in are not hashed a second time."""

    def __init__(self, algorithm: str):
        self.algorithm = algorithm
        self._h = hashlib.new(algorithm)
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self._h.update(chunk)
        self.size += len(chunk)

    def digest(self) -> str:
        return f"{self.algorithm}:{self._h.hexdigest()}"


def push_whole(reg: Registry, name: str, digest: str | None, chunks: Iterable[bytes],
               expected_length: int | None = None, *, hashed: StreamHash | None = None) -> Blob:
    """A whole blob in one request (``POST ?digest=``): a session claimed from its creation,
    written, verified and committed, with no chance for another request to interleave.

    ``hashed``: the producer of ``chunks`` hashes each chunk into it before yielding it (the
    pull-through mirror, which must know the digest verifies before its client gets the last
    byte); the commit then verifies that digest, and that it saw exactly the bytes written,
    instead of hashing them again."""
    d = _required_digest(digest)
    claim = _Claim(reg, paths.new_upload_id())
    upload = claim.create(name)
    try:
        return _commit(reg, name, claim, upload, d, chunks, expected_length, hashed)
    except BaseException:
        _discard(reg, upload)  # no client knows this session: nothing can resume it
        raise


def _discard(reg: Registry, upload: Upload) -> None:
    """Remove a session only this request knows, if it is still there (best effort: a stale
    session is reclaimed after ``upload_ttl`` anyway)."""
    try:
        with reg.db.write() as conn:
            if UploadStore(conn).delete(upload.id):
                _forget(Stores(conn), reg, upload)
    except Exception as exc:  # the request is failing already; its own error is the one to report
        log.warning("could not discard upload %s: %s", upload.id, exc)


def _required_digest(digest: str | None) -> Digest:
    if not digest:
        raise digest_invalid("digest parameter is required to finish an upload")
    return check_digest(digest)


def _commit(reg: Registry, name: str, claim: _Claim, upload: Upload, d: Digest, chunks: Iterable[bytes] | None,
            expected_length: int | None, hashed: StreamHash | None = None) -> Blob:
    """Verify and commit a session this request holds.

    Serialised with the collector on the blob row: if the registry already holds the
    blob (ready, same size), linking it protects it. If the collector removed the row and
    its tombstone still waits, the push cancels the tombstone (the data is kept); if a
    collector is deleting that data right now (a live lease), the push waits until the
    delete is done. Then the row is written as ``committing`` (invisible, skipped by the
    collector), the staged data is moved into place, and the row turns ``ready``.
    """
    try:
        hasher = None
        if chunks is not None:
            upload, hasher = _append(reg, claim, upload, chunks, expected_length, None, hashed)
        staged = _staged_exactly(reg, upload)
        if hashed is not None:  # hashed as it streamed in: its digest, if it saw exactly these bytes
            actual = hashed.digest().split(":", 1)[1] if (hashed.size == upload.size
                                                          and hashed.algorithm == d.algorithm) else ""
        else:
            if d.algorithm != "sha256":
                hasher = None
            elif hasher is None:
                hasher = reg.hashers.take(upload.id, upload.size)
            actual = hasher.hexdigest() if hasher is not None else _rehash(reg, staged, upload.size, d.algorithm,
                                                                              claim)
        faults.point("uploads.verified")
    except BaseException:
        claim.release_quietly()
        raise
    if actual != d.hex:
        _abandon(reg, upload, claim)
        raise digest_invalid("provided digest did not match uploaded content", str(d))
    digest = str(d)
    deadline = time.monotonic() + TOMBSTONE_WAIT
    try:
        while True:
            # its own unit: a deadlock with the collector rolls it back and it runs again
            waiting, ready = retrying(_commit_rows, reg, upload, claim, digest)
            if not waiting:
                break
            if time.monotonic() > deadline:
                log.warning("push of %s to %s gave up waiting for a tombstone", digest, name)
                raise RegistryError("TOOMANYREQUESTS", "blob is being garbage collected; retry the upload",
                                    {"digest": digest})
            claim.keep()
            time.sleep(0.05)
    except BaseException:
        claim.release_quietly()
        raise
    if ready:  # the 201 rests on that transaction alone
        reg.db.sync()
    else:
        try:
            reg.storage.move(staged, paths.blob_key(d))
        except BaseException:  # the session row is gone: its staged data goes to the collector
            _bury_staging(reg, upload)
            raise
        # synced, sharing its transaction with those of concurrent requests (Database.run)
        reg.db.run(partial(_mark_ready, digest))
    log.info("blob %s committed (%d bytes) to %s", digest, upload.size, name)
    return Blob(digest, upload.size)


def _mark_ready(digest: str, conn) -> None:
    """The data of ``digest`` is in place: its row turns ready."""
    BlobStore(conn).mark_ready(digest)


def _commit_rows(reg: Registry, upload: Upload, claim: _Claim, digest: str) -> tuple[bool, bool]:
    """The commit's one transaction: (waiting for a collector's delete, blob already held).

    Lock order as the collector's link review: the link's review row first (upserted), then
    the blob row; taken the other way round the two deadlocked on PostgreSQL.

    Not waited on to reach the disk (the caller syncs when the blob was already held; else
    the synced ``mark_ready`` after the move covers it). A power cut between the move and
    that sync leaves data with no row, which ``fsck`` reclaims, and a session whose staged
    data is gone, which answers a resume with a clean 4xx; nothing was acknowledged."""
    return reg.db.run(partial(_commit_body, reg, upload, claim, digest), sync=False)


def _commit_body(reg: Registry, upload: Upload, claim: _Claim, digest: str, conn) -> tuple[bool, bool]:
    """:func:`_commit_rows`'s transaction (one body of a group transaction: ``Database.run``)."""
    now = reg.now()
    store = BlobStore(conn)
    queue = Stores(conn)
    queue.reviews.add_links(upload.repository_id, [digest], now + reg.config.gc_delay, "uploaded")
    row = queue.blobs.lock(digest)
    if row is None and queue.tombstones.cancel_idle(digest, now) == "busy":
        return True, False
    # only an object known good (committed ready, of this size) is shared
    ready = row is not None and row.state == READY and row.size == upload.size
    held = row is not None  # locked for update above
    if row is None:
        held = store.add(digest, upload.size, now, state=COMMITTING)
    elif not ready:
        store.recommit(digest, upload.size)
    if not UploadStore(conn).delete_claimed(upload.id, claim.token):
        raise _lost(upload.id)
    quotas.charge(conn, reg, upload.repository_id, {digest: upload.size}, now)
    store.link(upload.repository_id, [digest], now, locked=held)
    if ready:  # the registry already holds these bytes: the staged copy goes
        queue.tombstones.add([_upload_tombstone(upload, now)])
    return False, ready


def _forget(queue: Stores, reg: Registry, upload: Upload) -> None:
    """A session row just removed: its staged data to the collector, its repository reviewed
    (it may have been the repository's only content)."""
    now = reg.now()
    queue.tombstones.add([_upload_tombstone(upload, now)])
    queue.reviews.add_repositories([upload.repository_id], now + reg.config.gc_delay)


def _bury_staging(reg: Registry, upload: Upload) -> None:
    try:
        with reg.db.write() as conn:
            Stores(conn).tombstones.add([_upload_tombstone(upload, reg.now())])
    except Exception as exc:  # fsck finds it then
        log.warning("upload %s: could not hand its staged data to the collector: %s", upload.id, exc)


def _abandon(reg: Registry, upload: Upload, claim: _Claim) -> None:
    """Remove a session this request holds; its staged data goes to the collector."""
    reg.hashers.drop(upload.id)
    with reg.db.write() as conn:
        if UploadStore(conn).delete_claimed(upload.id, claim.token):
            _forget(Stores(conn), reg, upload)


def cancel(reg: Registry, name: str, upload_id: str) -> None:
    get(reg, name, upload_id)  # the session must belong to this repository
    claim = _Claim(reg, upload_id)
    _abandon(reg, claim.take(), claim)
