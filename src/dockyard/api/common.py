"""Helpers shared by the route modules."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import queue
import threading
from typing import Any, Callable, TypeVar

from starlette.requests import Request

from dockyard.errors import RegistryError
from dockyard.meta.db import retrying
from dockyard.validate import check_name
from dockyard.registry.context import Registry

T = TypeVar("T")


def registry(request: Request) -> Registry:
    return request.app.state.registry


def repo_name(request: Request) -> str:
    return check_name(request.path_params["name"])


def actor(request: Request) -> str | None:
    identity = getattr(request.state, "identity", None)
    return identity.user if identity else None


SERVICE_THREADS = 40  # as many as anyio's default thread limiter, which run() used before
_pool: ServiceThreads | None = None
_pool_lock = threading.Lock()


class ServiceThreads:
    """Up to ``limit`` threads that run the calls :func:`run` hands over (started as needed).

    Lighter than a ``ThreadPoolExecutor`` behind ``run_in_executor``: no ``concurrent.futures``
    future (with its condition) per call chained to an asyncio one; the thread settles the
    caller's asyncio future itself, with one ``call_soon_threadsafe`` (README "Per-request
    overhead, second round": about 8 instead of 40 µs of CPU per hop, 32 in flight). A thread
    that finds nothing to do waits on the queue; as with the executor, the threads finish the
    calls they hold before the interpreter exits."""

    def __init__(self, limit: int, name: str) -> None:
        self.limit, self.name = limit, name
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)  # one token per thread waiting for a call
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        threading._register_atexit(self._close)  # type: ignore[attr-defined]  # as concurrent.futures does

    def submit(self, call: Callable[[], None]) -> None:
        if self._closed:  # the interpreter is exiting: no thread would take the call
            raise RuntimeError("cannot run a service call: the interpreter is shutting down")
        if not self._idle.acquire(blocking=False) and len(self._threads) < self.limit:
            with self._lock:
                if len(self._threads) < self.limit and not self._closed:
                    t = threading.Thread(target=self._work, name=f"{self.name}_{len(self._threads)}")
                    t.start()
                    self._threads.append(t)
        self._calls.put(call)

    def _work(self) -> None:
        while True:
            call = self._calls.get()
            if call is None:
                return
            call()
            del call
            self._idle.release()

    def _close(self) -> None:
        with self._lock:
            self._closed = True
            for _ in self._threads:
                self._calls.put(None)
        for t in self._threads:
            t.join()


def _service_pool() -> ServiceThreads:
    """The threads of :func:`run` (started as needed, one set per process)."""
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ServiceThreads(SERVICE_THREADS, "dockyard-service")
    return _pool


def _settle(future: asyncio.Future, ok: bool, value: Any) -> None:
    if not future.done():
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


async def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A blocking service call in a worker thread, run again after a deadlock or
    serialization failure that happened before it committed anything (``db.retrying``).

    The hop is a call handed to :class:`ServiceThreads`, not ``anyio.to_thread`` nor an
    executor: every request makes one (README "Per-request overhead" and its second round).
    As with anyio, a cancelled caller waits for the call to finish (it may be committing)
    before the cancellation goes on."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    call = functools.partial(contextvars.copy_context().run, retrying, fn, *args, **kwargs)

    def work() -> None:
        try:
            ok, value = True, call()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, as an executor does
            ok, value = False, exc
            if isinstance(exc, StopIteration):  # a future refuses it (and would never settle): as anyio does
                value = RuntimeError(f"a service call raised StopIteration: {exc!r}")
                value.__cause__ = exc
        try:
            loop.call_soon_threadsafe(_settle, future, ok, value)
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            pass

    _service_pool().submit(work)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait((future,))
        raise


MAX_UINT = 2**63 - 1
"""The largest number a client may send anywhere (a signed 64-bit database integer)."""
MAX_PAGE = 10_000
"""The most items one page of a listing holds, whatever the client asks for."""


def parse_uint(text: str, error: Callable[[], RegistryError], *, maximum: int = MAX_UINT,
               saturate: bool = False) -> int:
    """``text`` (a header or query value) as a non-negative decimal integer of ASCII digits.

    Beyond ``maximum`` the value is ``maximum`` if ``saturate`` (a position past every blob
    means "to the end"), else ``error()`` is raised, as it is for anything not a number. The
    length is checked before ``int()`` runs: Python refuses over 4,300 digits with a
    ValueError, and no database column holds more than 19.
    """
    if not text or not text.isascii() or not text.isdigit():
        raise error()
    digits = text.lstrip("0") or "0"
    value = int(digits) if len(digits) <= 19 else maximum + 1
    if value > maximum:
        if saturate:
            return maximum
        raise error()
    return value


def page_size(value: str, name: str) -> int:
    """A page size query parameter, clamped to :data:`MAX_PAGE`; a 400 if not a bounded number."""
    return min(MAX_PAGE, parse_uint(value, lambda: RegistryError(
        "PAGINATION_NUMBER_INVALID", f"{name} must be a non-negative integer of at most 19 digits",
        {name: value[:40]})))


def page_params(request: Request) -> tuple[int | None, str | None]:
    n = request.query_params.get("n")
    last = request.query_params.get("last") or None
    if n is None or n == "":
        return None, last
    return page_size(n, "n"), last


def next_link(path: str, items: list[str], limit: int | None, more: bool) -> dict[str, str]:
    if limit is None or not more or not items:
        return {}
    from urllib.parse import urlencode

    return {"Link": f'<{path}?{urlencode({"n": limit, "last": items[-1]})}>; rel="next"'}
