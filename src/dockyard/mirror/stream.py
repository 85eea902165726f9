"""A blob from the upstream, stored through the registry's push path (verified), optionally
handed to a client while it streams.

``through`` runs the store in a thread of its own and gives the client each chunk as the
store has taken it, holding back the last one until the digest is verified: a blob that
turns out not to match its digest (or breaks off) ends the client's iterator with an error,
so the response is aborted and the client never holds a complete wrong blob. A client that
goes away does not stop the store (the next pull finds the blob here).
"""

from __future__ import annotations

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


class _Tee:
    def __init__(self) -> None:
        self.q: queue.Queue = queue.Queue(maxsize=8)
        self.gone = threading.Event()
        self.last: bytes | None = None

    def give(self, item) -> None:
        while not self.gone.is_set():
            try:
                self.q.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def source(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        held = None
        for chunk in chunks:
            if held is not None:
                self.give(held)
            held = chunk
            yield chunk
        self.last = held

    def client(self) -> Iterator[bytes]:
        try:
            while True:
                try:
                    item = self.q.get(timeout=CLIENT_WAIT)
                except queue.Empty:
                    raise RegistryError("UNKNOWN", "mirror fetch stalled") from None
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.gone.set()


def through(mirror: Any, route: Any, name: str, digest: str, size: int | None,
            chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Start storing ``chunks`` and return the client's view of them (see the module doc).
    The caller holds the fetch claim of ``digest``; it is released when the store ends."""
    tee = _Tee()

    def run() -> None:
        try:
            store(mirror, route, name, digest, size, tee.source(chunks))
        except BaseException as exc:
            tee.give(exc)
        else:
            if tee.last is not None:
                tee.give(tee.last)
            tee.give(_END)
        finally:
            mirror.client_fetching(name)
            mirror._end(digest)

    threading.Thread(target=run, name=f"mirror-blob-{digest[7:19]}", daemon=True).start()
    return tee.client()
