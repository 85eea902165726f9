"""Helpers shared by the route modules."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import threading
from concurrent.futures import ThreadPoolExecutor
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
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _service_pool() -> ThreadPoolExecutor:
    """The threads of :func:`run` (started as needed, one set per process)."""
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(SERVICE_THREADS, thread_name_prefix="dockyard-service")
    return _pool


async def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A blocking service call in a worker thread, run again after a deadlock or
    serialization failure that happened before it committed anything (``db.retrying``).

    The hop is a plain executor future, not ``anyio.to_thread``: every request makes one, and
    anyio's (a limiter, a cancel scope, a ``queue.Queue`` per worker) cost twice the CPU of
    this one under concurrency (``bench/registry_throughput.py``, README "Per-request overhead").
    As with anyio, a cancelled caller waits for the call to finish (it may be committing)
    before the cancellation goes on."""
    call = functools.partial(contextvars.copy_context().run, retrying, fn, *args, **kwargs)
    future = asyncio.get_running_loop().run_in_executor(_service_pool(), call)
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
