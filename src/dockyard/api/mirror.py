"""HTTP side of the pull-through mirror: the hooks the manifest, blob and upload routes call
for repositories under a mirror's prefix, and the admin routes (admin role).

A manifest served from the cache while its upstream is unreachable carries
``Warning: 110 - "Response is stale"`` and ``Dockyard-Mirror: stale``; a manifest or blob
fetched from the upstream for this request carries ``Dockyard-Mirror: fetched``. Pushes to mirrored
repositories are refused with ``403 DENIED``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from dockyard.api.auth import requires
from dockyard.api.common import registry, run
from dockyard.api.lifecycle import _flag, _reference
from dockyard.api.streaming import ThreadFeed
from dockyard.errors import RegistryError
from dockyard.meta.manifests import Manifest
from dockyard.mirror import bound
from dockyard.mirror.service import Mirror

STALE = {"Warning": '110 - "Response is stale"', "Dockyard-Mirror": "stale"}


def mirror_of(request: Request) -> Mirror | None:
    return getattr(request.app.state, "mirror", None)


def build(reg) -> Mirror | None:
    if not reg.config.mirrors:
        return None
    mirror = Mirror(reg)
    mirror.on_stored = lambda busy: bound.enforce(reg, mirror.prefixes, busy)
    return mirror


def refuse_push(request: Request, name: str) -> None:
    mirror = mirror_of(request)
    if mirror is not None:
        mirror.refuse_push(name)


async def manifest(request: Request, name: str, reference: str, accept: list[str]) -> tuple[Manifest, dict] | None:
    """The manifest through the mirror and extra headers; None if ``name`` is not mirrored."""
    mirror = mirror_of(request)
    if mirror is None or mirror.route(name) is None:
        return None
    m, stale = await run(mirror.manifest, name, reference, accept)
    return m, (dict(STALE) if stale else {"Dockyard-Mirror": "fetched"} if not m.id else {})


async def blob_miss(request: Request, name: str, digest: str, exc: RegistryError) -> Response | None:
    """A blob that is not here: streamed from the upstream (GET of the whole blob), or fetched
    first (HEAD, a range) and then None so the caller serves it from here. Not mirrored: ``exc``."""
    mirror = mirror_of(request)
    if mirror is None or mirror.route(name) is None or exc.code not in ("BLOB_UNKNOWN", "NAME_UNKNOWN"):
        raise exc
    if request.method == "HEAD" or request.headers.get("range"):
        await run(mirror.fetch_blob, name, digest)
        return None
    feed = ThreadFeed(asyncio.get_running_loop())
    opened = await run(mirror.open_blob, name, digest, feed)
    if opened is None:
        return None
    body = feed.items()
    try:  # an upstream that breaks off or lies before the first byte reaches the client gets
        first = await body.__anext__()  # an OCI error here (RegistryError), not a cut 200
    except StopAsyncIteration:
        first = b""
    headers = {"Docker-Content-Digest": digest, "Content-Type": "application/octet-stream",
               "ETag": f'"{digest}"', "Dockyard-Mirror": "fetched"}
    if opened.size is not None:
        headers["Content-Length"] = str(opened.size)
    return StreamingResponse(_prepend(first, body), status_code=200, headers=headers)


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()  # the feed learns the response has gone (client disconnected)


# ---- admin -------------------------------------------------------------------------------
def _mirror(request: Request) -> Mirror:
    mirror = mirror_of(request)
    if mirror is None:
        raise RegistryError("NAME_UNKNOWN", "no mirrors are configured", status=404)
    return mirror


@requires("admin")
async def list_mirrors(request: Request) -> Response:
    """``GET /admin/v1/mirrors``: each upstream, its state, bytes and images mirrored."""
    mirror = _mirror(request)
    return JSONResponse(await run(bound.listing, registry(request), mirror.prefixes, mirror.states))


@requires("admin")
async def evict(request: Request) -> Response:
    """``POST /admin/v1/mirrors/evict?reference=hub/app:tag&dry_run=true``."""
    mirror = _mirror(request)
    return JSONResponse(await run(bound.evict_one, registry(request), mirror.prefixes, _reference(request),
                                  dry_run=_flag(request, "dry_run")))


@requires("admin")
async def prune(request: Request) -> Response:
    """``POST /admin/v1/mirrors/prune?dry_run=true``: evict down to ``mirror_max_size``."""
    mirror = _mirror(request)
    return JSONResponse(await run(bound.prune, registry(request), mirror.prefixes, dry_run=_flag(request, "dry_run")))


def routes() -> list[Route]:
    return [
        Route("/admin/v1/mirrors", list_mirrors, methods=["GET"]),
        Route("/admin/v1/mirrors/evict", evict, methods=["POST"]),
        Route("/admin/v1/mirrors/prune", prune, methods=["POST"]),
    ]
