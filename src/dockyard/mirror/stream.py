"""A blob from the upstream, stored through the registry's push path (verified), optionally
handed to a client while it streams.

``through`` reads the upstream once, in one thread, handing each chunk to the client and to
the store (another thread: the push path, ``uploads.push_whole``, which hashes each byte once
and writes it once, into the session's staging file). The client gets every byte but the
last chunk at once; the last one only when the store's hasher has seen every byte and the
digest and size verify; that same hash is what the push path checks before its commit makes
the blob visible, so nothing is hashed or read twice, and the client does not wait for the
commit. A blob that does not match its digest, is too long or breaks off ends the client's
stream with an error (the client never holds a complete wrong blob) and nothing is cached.
A client that goes away does not stop the store (the next pull finds the blob here); a
store that fails ends the client's stream with an error. While the registry refuses
uploads (its disk is full) the blob is relayed without storing, hashed by the reader.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from dockyard.errors import RegistryError
from dockyard.mirror.upstream import UpstreamError
from dockyard.registry import uploads

log = logging.getLogger(__name__)
_END = object()
STALL = 300.0  # a reader or store that gives the other nothing for this long is taken as stuck


class Client(Protocol):
    """Where ``through`` hands the client's bytes (``api.streaming.ThreadFeed``)."""

    def put(self, chunk: bytes) -> bool: ...  # False: the client has gone

    def end(self) -> None: ...

    def fail(self, exc: BaseException) -> None: ...


def store(mirror: Any, route: Any, name: str, digest: str, size: int | None,
          chunks: Iterable[bytes], hasher=None) -> None:
    """Store ``chunks`` as blob ``digest`` of ``name`` by the push path (which verifies it);
    ``hasher``: see ``uploads.push_whole``."""
    counter = [0]

    def counted() -> Iterator[bytes]:
        for chunk in chunks:
            counter[0] += len(chunk)
            yield chunk

    try:
        uploads.push_whole(mirror.reg, name, digest, counted(), size, hasher=hasher)
    except UpstreamError as exc:
        mirror.failed(route, "blob", exc)
        raise
    except RegistryError as exc:
        if exc.code not in ("DIGEST_INVALID", "SIZE_INVALID", "BLOB_UPLOAD_INVALID"):
            raise
        bad = UpstreamError(route.name, f"blob {digest} from {route.remote}: {exc.message}; nothing cached")
        mirror.failed(route, "blob", bad)
        log.warning("%s", bad)
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


class _Verdict:
    """The store's word on the bytes, for the reader: verified (None) or an error."""

    def __init__(self) -> None:
        self._given = threading.Event()
        self.error: BaseException | None = None

    def give(self, error: BaseException | None) -> None:
        if not self._given.is_set():
            self.error = error
            self._given.set()

    def wait(self) -> BaseException | None:
        if not self._given.wait(STALL):
            return RegistryError("UNKNOWN", "mirror store stalled")
        return self.error


def _mismatch(route: Any, digest: str, count: int) -> UpstreamError:
    return UpstreamError(route.name, f"blob {digest} does not match its digest ({count} bytes); nothing cached")


def _checked(items: Iterator[bytes], route: Any, digest: str, hasher, verdict: _Verdict) -> Iterator[bytes]:
    """The store's side: the reader's chunks; at their end (when the push path, which hashes
    each chunk before it asks for the next, has hashed them all) the digest is checked and
    the verdict given, before the commit."""
    count = 0
    for chunk in items:
        count += len(chunk)
        yield chunk
    if f"{hasher.name}:{hasher.hexdigest()}" != digest:
        raise _mismatch(route, digest, count)
    verdict.give(None)


def _read(route: Any, digest: str, size: int | None, chunks: Iterator[bytes], client: Client,
          storage: _Pipe | None, verdict: _Verdict | None, hasher) -> None:
    """Read the upstream once, handing each chunk to the store and to the client: at once
    while more must follow (``size`` known), else one chunk behind; the last one once the
    store's verdict (or, with no store, this thread's own hash) says the bytes verify."""
    count, held = 0, None
    try:
        for chunk in chunks:
            if not chunk:
                continue
            count += len(chunk)
            if size is not None and count > size:
                raise UpstreamError(route.name, f"blob {digest} is longer than the {size} bytes announced; "
                                                "nothing cached")
            if held is not None:
                client.put(held)
                held = None
            if size is not None and count < size:
                client.put(chunk)  # the client sends it while the store hashes and writes it
            else:
                held = chunk
            if storage is not None:
                storage.put(chunk)  # a store that failed has gone: its verdict tells the client
            else:
                hasher.update(chunk)
        if size not in (None, count):
            raise UpstreamError(route.name, f"blob {digest} broke off after {count} of {size} bytes; "
                                            "nothing cached")
        if storage is not None and verdict is not None:
            storage.put(_END)
            error = verdict.wait()
            if error is not None:
                raise error
        elif f"{hasher.name}:{hasher.hexdigest()}" != digest:
            raise _mismatch(route, digest, count)
    except BaseException as exc:
        if storage is not None:
            storage.put(exc)  # the store aborts: nothing is committed
        client.fail(exc)
        return
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    if held is not None:
        client.put(held)
    client.end()


def through(mirror: Any, route: Any, name: str, digest: str, size: int | None,
            chunks: Iterator[bytes], client: Client) -> None:
    """Start reading ``chunks`` (one thread) and storing them (another) while ``client``
    gets them (see the module doc). The caller holds the fetch claim of ``digest``; it is
    released when the store ends."""
    hasher = hashlib.new(digest.split(":", 1)[0])
    reserve = mirror.reg.reserve
    if reserve is not None and reserve.refuses_uploads():  # relayed, not stored: hashed by the reader

        def relay() -> None:
            try:
                _read(route, digest, size, chunks, client, None, None, hasher)
            finally:
                mirror.client_fetching(name, -1)
                mirror._end(digest)

        log.info("mirror %s: blob %s relayed, not stored (uploads are refused)", route.name, digest)

        threading.Thread(target=relay, name=f"mirror-relay-{digest[7:19]}", daemon=True).start()
        return
    storage, verdict = _Pipe(16), _Verdict()

    def run() -> None:
        try:
            store(mirror, route, name, digest, size, _checked(storage.items(), route, digest, hasher, verdict),
                  hasher)
        except BaseException as exc:  # recorded by store(); the reader tells the client
            log.debug("mirror store of %s ended: %s", digest, exc)
            verdict.give(exc)
        finally:
            verdict.give(RegistryError("UNKNOWN", "mirror store ended before it verified the blob"))
            storage.gone.set()
            mirror.client_fetching(name, -1)
            mirror._end(digest)

    threading.Thread(target=_read, args=(route, digest, size, chunks, client, storage, verdict, hasher),
                     name=f"mirror-read-{digest[7:19]}", daemon=True).start()
    threading.Thread(target=run, name=f"mirror-store-{digest[7:19]}", daemon=True).start()
