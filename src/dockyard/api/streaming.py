"""Bridging request and response bodies (async) to storage (blocking).

Uploads: one worker thread consumes the body while the event loop keeps receiving
it; chunks are batched to ~1 MiB and at most a few batches are in flight, so memory
stays flat whatever the blob size. Downloads: the driver's iterator is advanced in
a worker thread, one ~1 MiB chunk at a time, two at the start (so a one-chunk body is whole
after the first thread call and goes out as a plain response). A body a thread produces by itself (the
mirror's relay) is pushed to the loop instead (:class:`ThreadFeed`): no thread hop per chunk.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from dockyard.errors import RegistryError

T = TypeVar("T")
BATCH = 1024 * 1024
SMALL = 64 * 1024  # bodies up to this size are received before the consumer starts
IN_FLIGHT = 4
_END = object()


class _Aborted(Exception):
    pass


async def consume_body(request: Request, consumer: Callable[[Iterator[bytes]], T], *,
                       receive_small_first: bool = False) -> T:
    """Run ``consumer(chunks)`` in a worker thread, feeding it the request body.

    With ``receive_small_first``, a body that announces at most :data:`SMALL` bytes is
    received before the consumer starts and handed over whole: one thread hop, no queue.
    Only for a consumer that has nothing to hold while the body arrives (a whole blob in a
    new session); a consumer on an existing session claims it first, so that a second
    request on the session meanwhile is refused."""
    length = request.headers.get("content-length")
    if (receive_small_first and length is not None and length.isdigit() and len(length) < 10 and int(length) <= SMALL
            and "transfer-encoding" not in request.headers):
        try:
            body = await request.body()  # never more than Content-Length: the server stops there
        except ClientDisconnect as exc:
            raise RegistryError("BLOB_UPLOAD_INVALID", "client disconnected during upload") from exc
        return await run_in_threadpool(consumer, iter((body,) if body else ()))
    loop = asyncio.get_running_loop()
    q: queue.SimpleQueue = queue.SimpleQueue()
    slots = asyncio.Semaphore(IN_FLIGHT)

    def chunks() -> Iterator[bytes]:
        while True:
            item = q.get()
            loop.call_soon_threadsafe(slots.release)
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise _Aborted() from item
            yield from item

    task = loop.run_in_executor(None, consumer, chunks())

    async def send(item) -> bool:
        """Queue ``item`` once a slot is free; False if the consumer has already ended."""
        if not slots.locked():
            await slots.acquire()
        else:
            acquire = asyncio.ensure_future(slots.acquire())
            await asyncio.wait({acquire, task}, return_when=asyncio.FIRST_COMPLETED)
            if not acquire.done():
                acquire.cancel()
                return False
        q.put(item)
        return True

    try:
        batch: list[bytes] = []  # chunks are handed over as they came: no copy
        size = 0
        async for chunk in request.stream():
            if not chunk:
                continue
            batch.append(chunk)
            size += len(chunk)
            if size >= BATCH:
                if not await send(batch):
                    break
                batch, size = [], 0
        else:
            if (not batch or await send(batch)):
                await send(_END)
    except ClientDisconnect as exc:
        q.put(exc)
        try:
            await task
        except _Aborted:
            pass
        raise RegistryError("BLOB_UPLOAD_INVALID", "client disconnected during upload") from exc
    except BaseException as exc:
        q.put(exc)
        raise
    try:
        return await task
    except _Aborted as exc:  # pragma: no cover - only after an error above
        raise RegistryError("BLOB_UPLOAD_INVALID", "upload aborted") from exc


_DONE = object()


def _close(it: Iterator[bytes]) -> None:
    close = getattr(it, "close", None)
    if close is not None:
        close()


def _step(it: Iterator[bytes]) -> object:
    """The next chunk, or ``_DONE`` once the iterator is exhausted (and then closed, in the
    same worker-thread call)."""
    chunk = next(it, _DONE)
    if chunk is _DONE:
        _close(it)
    return chunk


def read_start(open_chunks: Callable[[], Iterator[bytes]]) -> tuple[Iterator[bytes], list[bytes], bool]:
    """Blocking (call it in a worker thread): open a chunk iterator and read the start of it,
    up to two chunks. ``(it, chunks, done)``; when ``done`` the whole body is in ``chunks``
    and ``it`` is closed already (a blob of one chunk, such as a cached 1 MiB layer, then
    needs no thread hop after this one). A failure to open or to read the start is raised
    here, before a response begins (an OCI error, not a cut 200)."""
    it = open_chunks()
    try:
        chunks: list[bytes] = []
        for _ in range(2):
            chunk = _step(it)
            if chunk is _DONE:
                return it, chunks, True
            chunks.append(chunk)
        return it, chunks, False
    except BaseException:
        _close(it)
        raise


def body_response(started: tuple[Iterator[bytes], list[bytes], bool], status: int,
                  headers: dict[str, str]) -> Response:
    """The response for a body begun by :func:`read_start`: a plain response when it is all in
    hand in one piece (no task, no more thread hops), else a stream of the rest, one thread call
    per chunk, the last of which also closes the iterator."""
    it, chunks, done = started
    if done and len(chunks) <= 1:
        return Response(chunks[0] if chunks else b"", status_code=status, headers=headers)
    return StreamingResponse(_rest(it, chunks, done), status_code=status, headers=headers)


async def _rest(it: Iterator[bytes], chunks: list[bytes], done: bool) -> AsyncIterator[bytes]:
    try:
        while True:
            for chunk in chunks:
                yield chunk
            if done:
                return
            chunk = await run_in_threadpool(_step, it)
            if chunk is _DONE:
                done = True
                return
            chunks = [chunk]
    finally:
        if not done:  # the response stopped early (client gone, error): close it
            await run_in_threadpool(_close, it)


class ThreadFeed:
    """Chunks a worker thread produces, for a response the event loop sends.

    The thread calls ``put`` (waits while ``depth`` chunks are in flight, so memory stays
    bounded; False once the response has gone, or has taken nothing for ``stall`` seconds),
    then ``end`` or ``fail(exc)`` (the first of the two counts). The loop iterates
    :meth:`items`; ``fail``'s error is raised there, and nothing for ``stall`` seconds is an
    error too."""

    def __init__(self, loop: asyncio.AbstractEventLoop, depth: int = 16, stall: float = 300.0):
        self._loop = loop
        self._q: asyncio.Queue = asyncio.Queue()
        self._slots = threading.Semaphore(depth)
        self._gone = threading.Event()
        self._closed = False
        self.stall = stall

    def _send(self, item) -> bool:
        waited = 0.0
        while not self._gone.is_set():
            if not self._slots.acquire(timeout=0.5):
                waited += 0.5
                if waited >= self.stall:  # a response that takes nothing any more has gone
                    self._gone.set()
                continue
            if self._gone.is_set():
                return False
            try:
                self._loop.call_soon_threadsafe(self._q.put_nowait, item)
            except RuntimeError:  # the loop has closed
                self._gone.set()
                return False
            return True
        return False

    def put(self, chunk: bytes) -> bool:
        return not self._closed and self._send(chunk)

    def end(self) -> None:
        if not self._closed:
            self._closed = True
            self._send(_END)

    def fail(self, exc: BaseException) -> None:
        if not self._closed:
            self._closed = True
            self._send(exc)

    async def items(self) -> AsyncIterator[bytes]:
        try:
            while True:
                if self._q.empty():
                    try:
                        item = await asyncio.wait_for(self._q.get(), self.stall)
                    except TimeoutError:
                        raise RegistryError("UNKNOWN", "the body's producer stalled") from None
                else:
                    item = self._q.get_nowait()
                self._slots.release()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._gone.set()
