"""Helpers shared by the route modules."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from dockyard.errors import RegistryError
from dockyard.meta.db import retrying
from dockyard.registry.common import check_name
from dockyard.registry.context import Registry

T = TypeVar("T")


def registry(request: Request) -> Registry:
    return request.app.state.registry


def repo_name(request: Request) -> str:
    return check_name(request.path_params["name"])


def actor(request: Request) -> str | None:
    identity = getattr(request.state, "identity", None)
    return identity.user if identity else None


async def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A blocking service call in the thread pool, run again after a deadlock or
    serialization failure that happened before it committed anything (``db.retrying``)."""
    return await run_in_threadpool(retrying, fn, *args, **kwargs)


def page_params(request: Request) -> tuple[int | None, str | None]:
    n = request.query_params.get("n")
    last = request.query_params.get("last") or None
    if n is None or n == "":
        return None, last
    try:
        limit = int(n)
    except ValueError:
        limit = -1
    if limit < 0:
        raise RegistryError("PAGINATION_NUMBER_INVALID", "n must be a non-negative integer", {"n": n})
    return min(limit, 10_000), last


def next_link(path: str, items: list[str], limit: int | None, more: bool) -> dict[str, str]:
    if limit is None or not more or not items:
        return {}
    from urllib.parse import urlencode

    return {"Link": f'<{path}?{urlencode({"n": limit, "last": items[-1]})}>; rel="next"'}
