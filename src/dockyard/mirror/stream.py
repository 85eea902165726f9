"""A blob from the upstream, stored through the registry's push path (verified), optionally
handed to a client while it streams.

``through`` reads the upstream once, in one thread that hashes each byte once, handing
each chunk to the client and to the store (another thread: the push path,
``uploads.push_whole``, which writes each byte once, into the session's staging file, and
commits with the reader's hash, ``StreamHash``: nothing is hashed or read twice, and the
commit still makes visible only bytes whose digest and size verified). The client gets
every byte but the last chunk at once; the last one once the digest and size verify, without
waiting for the store. A blob that does not match its digest, is too long or breaks off
ends the client's stream with an error (the client never holds a complete wrong blob) and
the store commits nothing. A client that goes away does not stop the store (the next pull
finds the blob here); a store that fails does not stop the client's stream. The store
thread runs at a lower CPU priority than the reader (``STORE_NICE``). While the
registry refuses uploads (its disk is full) the blob is relayed without storing.

``teed`` stores a blob the same way with no client (the prefetch), keeping what it has read
in a :class:`Tee` that requests joining the fetch replay and then follow: they get each
chunk as it is read, the last one only once the digest and size verify, like a client of
``through``. A blob is teed only when its size is announced and at most ``TEE_MAX`` (the
chunks are held in memory until the fetch ends); a larger one is joined by waiting for it.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from dockyard import faults
from dockyard.errors import RegistryError
from dockyard.mirror.upstream import UpstreamError
from dockyard.registry import uploads

log = logging.getLogger(__name__)
_END = object()
_OPEN = object()
STALL = 300.0  # a reader or store that gives the other nothing for this long is taken as stuck
STORE_NICE = 10  # the store thread's niceness: the reader and the client's stream come first
TEE_MAX = 64 * 1024 * 1024  # the largest blob a prefetch keeps in memory for requests that join it


def _background() -> None:
    """Lower this thread's CPU priority (Linux: niceness is per thread). The store is not on
    the client's path; on a busy machine it measurably slowed the client's stream."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), STORE_NICE)
    except (AttributeError, OSError):  # not Linux, or not allowed: run at the usual priority
        pass


class Client(Protocol):
    """Where ``through`` hands the client's bytes (``api.streaming.ThreadFeed``)."""

    def put(self, chunk: bytes) -> bool: ...  # False: the client has gone

    def end(self) -> None: ...

    def fail(self, exc: BaseException) -> None: ...


def store(mirror: Any, route: Any, name: str, digest: str, size: int | None,
          chunks: Iterable[bytes], hashed: uploads.StreamHash | None = None) -> None:
    """Store ``chunks`` as blob ``digest`` of ``name`` by the push path (which verifies it);
    ``hashed``: see ``uploads.push_whole``."""
    counter = [0]

    def counted() -> Iterator[bytes]:
        for chunk in chunks:
            counter[0] += len(chunk)
            yield chunk

    try:
        uploads.push_whole(mirror.reg, name, digest, counted(), size, hashed=hashed)
    except UpstreamError as exc:
        mirror.failed(route, "blob", exc)
        raise
    except RegistryError as exc:
        if exc.code not in ("DIGEST_INVALID", "SIZE_INVALID", "BLOB_UPLOAD_INVALID"):
            raise
        bad = UpstreamError(route.name, f"blob {digest} from {route.remote}: {exc.message}; nothing cached")
        mirror.failed(route, "blob", bad)
        log.warning("%s", bad)
        bad.logged = True
        raise bad from exc
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    mirror._ok(route, "blob", counter[0])
    log.info("mirror %s: blob %s stored in %s (%d bytes)", route.name, digest, name, counter[0])


class _Pipe:
    """A bounded hand-over between two threads; ``put`` gives up once the reader has gone."""

    def __init__(self, size: int) -> None:
        self.q: queue.Queue = queue.Queue(maxsize=size)
        self.gone = threading.Event()

    def put(self, item) -> bool:
        while not self.gone.is_set():
            try:
                self.q.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def items(self) -> Iterator[bytes]:
        try:
            while True:
                try:
                    item = self.q.get(timeout=STALL)
                except queue.Empty:
                    raise RegistryError("UNKNOWN", "mirror fetch stalled") from None
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.gone.set()


def _read(route: Any, digest: str, size: int | None, chunks: Iterator[bytes], client: Client,
          storage: _Pipe | None, hashed: uploads.StreamHash) -> BaseException | None:
    """Read the upstream once, hashing each chunk into ``hashed`` before handing it to the
    store and to the client: at once while more must follow (``size`` known), else one
    chunk behind; the last one (or an error, also returned) once the digest and size are
    checked."""
    held = None
    try:
        for chunk in chunks:
            if not chunk:
                continue
            hashed.update(chunk)
            if size is not None and hashed.size > size:
                raise UpstreamError(route.name, f"blob {digest} is longer than the {size} bytes announced; "
                                                "nothing cached")
            if storage is not None:
                storage.put(chunk)  # a store that failed has gone: the client is still served
            if held is not None:
                client.put(held)
                held = None
            if size is not None and hashed.size < size:
                client.put(chunk)
            else:
                held = chunk
        if hashed.digest() != digest or size not in (None, hashed.size):
            raise UpstreamError(route.name, f"blob {digest} does not match its digest ({hashed.size} bytes); "
                                            "nothing cached")
        if storage is not None:
            storage.put(_END)
    except BaseException as exc:
        if storage is not None:
            storage.put(exc)  # the store aborts: nothing is committed
        client.fail(exc)
        return exc
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    if held is not None:
        client.put(held)
    client.end()
    return None


class Tee:
    """What a fetch in flight has read (and verified, for the last chunk), for requests that
    join it: ``put``/``end``/``fail`` are the reader's (a ``Client`` that never blocks);
    ``follow(client)`` hands everything so far and then each new chunk to ``client``, in the
    joiner's own thread."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._chunks: list[bytes] = []
        self._outcome: BaseException | None | object = _OPEN
        self._cond = threading.Condition()

    def put(self, chunk: bytes) -> bool:
        with self._cond:
            self._chunks.append(chunk)
            self._cond.notify_all()
        return True

    def end(self) -> None:
        self._finish(None)

    def fail(self, exc: BaseException) -> None:
        self._finish(exc)

    def _finish(self, outcome: BaseException | None) -> None:
        with self._cond:
            if self._outcome is _OPEN:
                self._outcome = outcome
            self._cond.notify_all()

    @property
    def failed(self) -> bool:
        with self._cond:
            return isinstance(self._outcome, BaseException)

    def follow(self, client: Client) -> None:
        i = 0
        while True:
            with self._cond:
                stalled = False
                while i == len(self._chunks) and self._outcome is _OPEN and not stalled:
                    stalled = not self._cond.wait(STALL)
                if i < len(self._chunks):
                    chunk, outcome = self._chunks[i], _OPEN
                    i += 1
                elif self._outcome is not _OPEN or not stalled:
                    outcome = self._outcome
                else:  # this follower gives up; the fetch and its other followers go on
                    outcome = RegistryError("UNKNOWN", "mirror fetch stalled")
            if outcome is _OPEN:
                if not client.put(chunk):
                    return  # the client has gone
            elif outcome is None:
                client.end()
                return
            else:
                client.fail(outcome)
                return


def teed(mirror: Any, route: Any, name: str, digest: str, size: int, chunks: Iterator[bytes], tee: Tee) -> None:
    """Store ``chunks`` (``store``), hashing each on its way in and handing it to ``tee``:
    the last one once the digest and size verify; an error ends ``tee`` with that error."""
    hashed = uploads.StreamHash(digest.split(":", 1)[0])

    def read() -> Iterator[bytes]:
        for chunk in chunks:
            if not chunk:
                continue
            hashed.update(chunk)
            if hashed.size > size:
                raise UpstreamError(route.name, f"blob {digest} is longer than the {size} bytes announced; "
                                                "nothing cached")
            if hashed.size < size:
                tee.put(chunk)
                faults.point("mirror.teed_chunk")  # a request joining now replays, then follows
                yield chunk
                continue
            if hashed.digest() != digest:
                raise UpstreamError(route.name, f"blob {digest} does not match its digest ({hashed.size} bytes); "
                                                "nothing cached")
            tee.put(chunk)  # verified: the joiners get it while the store commits
            tee.end()
            yield chunk
        if hashed.size != size:
            raise UpstreamError(route.name, f"blob {digest} does not match its digest ({hashed.size} bytes); "
                                            "nothing cached")

    try:
        store(mirror, route, name, digest, size, read(), hashed)
    except BaseException as exc:
        tee.fail(exc)
        raise
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    tee.end()


def through(mirror: Any, route: Any, name: str, digest: str, size: int | None,
            chunks: Iterator[bytes], client: Client) -> None:
    """Start reading ``chunks`` (one thread) and storing them (another) while ``client``
    gets them (see the module doc). The caller holds the fetch claim of ``digest``; it is
    released when the store ends."""
    hashed = uploads.StreamHash(digest.split(":", 1)[0])
    reserve = mirror.reg.reserve
    storing = reserve is None or not reserve.refuses_uploads()
    storage = _Pipe(16) if storing else None

    def run() -> None:
        _background()
        try:
            store(mirror, route, name, digest, size, storage.items(), hashed)
        except BaseException as exc:  # recorded by store(); the client learns it from the reader
            lie = isinstance(exc, UpstreamError) and not exc.logged  # one line per failed verification
            (log.warning if lie else log.debug)("mirror store of %s ended: %s", digest, exc)
        finally:
            storage.gone.set()
            done()

    def done() -> None:
        mirror.client_fetching(name, -1)
        mirror._end(digest)

    def relay() -> None:  # nothing to store: the reader alone, then the claim is released
        try:
            failed = _read(route, digest, size, chunks, client, None, hashed)
            if isinstance(failed, UpstreamError):
                mirror.failed(route, "blob", failed)
            log.info("mirror %s: blob %s relayed, not stored (uploads are refused)", route.name, digest)
        finally:
            done()

    if storage is None:
        threading.Thread(target=relay, name=f"mirror-relay-{digest[7:19]}", daemon=True).start()
        return
    threading.Thread(target=_read, args=(route, digest, size, chunks, client, storage, hashed),
                     name=f"mirror-read-{digest[7:19]}", daemon=True).start()
    threading.Thread(target=run, name=f"mirror-store-{digest[7:19]}", daemon=True).start()
