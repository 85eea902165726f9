"""A blob from the upstream, stored through the registry's push path (verified), optionally
handed to a client while it streams.

``through`` reads the upstream in one thread, handing each chunk to the store (another
thread, the push path, which verifies again before the blob becomes visible) and to the
client, the last one only once the reader has checked the digest (so the client need not
wait for the store's commit): a blob that
turns out not to match its digest (or breaks off) ends the client's iterator with an error,
so the response is aborted and the client never holds a complete wrong blob. A client that
goes away does not stop the store (the next pull finds the blob here).
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from typing import Any, Iterator

from dockyard.errors import RegistryError
from dockyard.mirror.upstream import UpstreamError
from dockyard.registry import uploads

log = logging.getLogger(__name__)
_END = object()
CLIENT_WAIT = 300.0  # a store that gives the client nothing for this long is taken as stuck


def store(mirror: Any, route: Any, name: str, digest: str, size: int | None,
          chunks: Iterator[bytes], counter: list[int] | None = None) -> None:
    """Store ``chunks`` as blob ``digest`` of ``name`` by the push path (which verifies it)."""
    counter = counter if counter is not None else [0]

    def counted() -> Iterator[bytes]:
        for chunk in chunks:
            counter[0] += len(chunk)
            yield chunk

    try:
        uploads.push_whole(mirror.reg, name, digest, counted(), size)
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

    def items(self, stalled: str) -> Iterator[bytes]:
        try:
            while True:
                try:
                    item = self.q.get(timeout=CLIENT_WAIT)
                except queue.Empty:
                    raise RegistryError("UNKNOWN", stalled) from None
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.gone.set()


def _read(route: Any, digest: str, size: int | None, chunks: Iterator[bytes], client: _Pipe,
          storage: _Pipe) -> None:
    """Read the upstream once: every chunk to the store, and to the client one chunk behind;
    the last one (or an error) goes to the client once the digest is checked."""
    hasher = hashlib.new(digest.split(":", 1)[0])
    held, count = None, 0
    try:
        for chunk in chunks:
            count += len(chunk)
            hasher.update(chunk)
            storage.put(chunk)  # a store that failed has gone: the client is still served
            if held is not None:
                client.put(held)
            held = chunk
        storage.put(_END)
        actual = f"{digest.split(':', 1)[0]}:{hasher.hexdigest()}"
        if actual != digest or size not in (None, count):
            raise UpstreamError(route.name, f"blob {digest} does not match its digest ({count} bytes); "
                                            "nothing cached")
        if held is not None:
            client.put(held)
        client.put(_END)
    except BaseException as exc:
        storage.put(exc)  # the store aborts: nothing is committed
        client.put(exc)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def through(mirror: Any, route: Any, name: str, digest: str, size: int | None,
            chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Start reading ``chunks`` (one thread) and storing them (another); return the client's
    view (see the module doc). The caller holds the fetch claim of ``digest``; it is released
    when the store ends."""
    client, storage = _Pipe(8), _Pipe(16)

    def run() -> None:
        try:
            store(mirror, route, name, digest, size, storage.items("mirror store stalled"))
        except BaseException as exc:  # recorded by store(); the client learns it from the reader
            log.debug("mirror store of %s ended: %s", digest, exc)
        finally:
            storage.gone.set()
            mirror.client_fetching(name, -1)
            mirror._end(digest)

    threading.Thread(target=_read, args=(route, digest, size, chunks, client, storage),
                     name=f"mirror-read-{digest[7:19]}", daemon=True).start()
    threading.Thread(target=run, name=f"mirror-store-{digest[7:19]}", daemon=True).start()
    return client.items("mirror fetch stalled")
