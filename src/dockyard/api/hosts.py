"""Routes of hosts running ``dockyard agent`` (``/admin/v1/hosts``) and the registry-wide image delete.

Admin only: add/remove/list hosts, queue work, delete an image in the registry. A host's own
calls (heartbeat, inventory, poll for work, confirm work, read its images) take an admin or
that host's credential, never another host's.
"""

from __future__ import annotations

import functools
import math
from typing import Awaitable, Callable

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dockyard.api.auth import _drain, requires
from dockyard.api.common import actor, registry, run
from dockyard.api.lifecycle import _flag
from dockyard.errors import RegistryError
from dockyard.hosts import service
from dockyard.oci.manifest import loads_bounded
from dockyard.oci.names import is_valid_name, is_valid_tag
from dockyard.validate import check_digest

MAX_INVENTORY_BYTES = 256 * 1024 * 1024
MAX_RESULTS = 10_000


def host_call(handler: Callable[[Request], Awaitable[Response]]):
    """An admin, or the host named in the path with its own credential."""

    @functools.wraps(handler)
    async def inner(request: Request) -> Response:
        auth = request.app.state.auth
        try:
            identity = await auth.authenticate(request)
            name = request.path_params["host"]
            if identity.host is not None:
                if identity.host != name:
                    raise RegistryError("DENIED", "a host credential is good for its own host only",
                                        {"host": name}, status=403)
            elif not identity.allows("admin"):
                if identity.user is None:
                    raise auth.challenge(request)
                raise RegistryError("DENIED", "requires the admin role or this host's credential",
                                    {"user": identity.user}, status=403)
            request.state.identity = identity
            return await handler(request)
        except RegistryError:
            await _drain(request)
            raise

    inner.required_role = "host"  # type: ignore[attr-defined]
    return inner


def _bad(reason: str, **detail) -> RegistryError:
    return RegistryError("UNSUPPORTED", f"invalid request body: {reason}", detail or None, status=400)


async def _json(request: Request, limit: int = 16 * 1024 * 1024):
    body = await request.body()
    if len(body) > limit:
        raise _bad("too large")
    try:
        return loads_bounded(body or b"{}")
    except ValueError as exc:
        raise _bad("not JSON") from exc


def _number(value, name: str, *, optional: bool = True):
    if value is None and optional:
        return None
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or value < 0 or value > 2**62):
        raise _bad(f"{name} must be a non-negative number")
    return value


def check_image(item) -> dict:
    """One image a host reports, checked field by field (it goes into the database as is)."""
    if not isinstance(item, dict):
        raise _bad("an image must be an object")
    repository, tag, containers = item.get("repository"), item.get("tag"), item.get("containers") or []
    if not isinstance(repository, str) or not is_valid_name(repository):
        raise _bad("invalid repository", repository=str(repository)[:200])
    if tag is not None and (not isinstance(tag, str) or not is_valid_tag(tag)):
        raise _bad("invalid tag", tag=str(tag)[:200])
    if (not isinstance(containers, list) or len(containers) > 1000
            or not all(isinstance(c, str) and 0 < len(c) <= 255 for c in containers)):
        raise _bad("containers must be a list of names")
    return {"repository": repository, "tag": tag, "digest": str(check_digest(str(item.get("digest")))),
            "managed": bool(item.get("managed")), "bytes": int(_number(item.get("bytes", 0), "bytes", optional=False)),
            "pulled_at": _number(item.get("pulled_at"), "pulled_at"),
            "last_used": _number(item.get("last_used"), "last_used"), "containers": containers}


@requires("admin")
async def list_hosts(request: Request) -> Response:
    return JSONResponse({"hosts": await run(service.list_hosts, registry(request))})


@requires("admin")
async def add_host(request: Request) -> Response:
    name = request.path_params["host"]
    token = await run(service.add_host, registry(request), name)
    return JSONResponse({"host": name, "token": token}, status_code=201)


@requires("admin")
async def remove_host(request: Request) -> Response:
    name = request.path_params["host"]
    if not await run(service.remove_host, registry(request), name):
        raise service.unknown_host(name)
    return Response(status_code=204)


@requires("admin")
async def queue_work(request: Request) -> Response:
    """``POST /admin/v1/hosts/HOST/work?kind=pull|delete&reference=REPO:TAG&dry_run=true``."""
    if request.query_params.get("kind", "") not in service.KINDS:
        raise _bad("kind must be pull or delete", kind=request.query_params.get("kind", "")[:40])
    report = await run(service.request, registry(request), request.path_params["host"],
                       request.query_params.get("kind", ""), request.query_params.get("reference", ""),
                       actor(request), dry_run=_flag(request, "dry_run"))
    event = _signals(request).pop(request.path_params["host"], None)
    if event is not None:
        event.set()  # a long poll of that host waiting in this process answers now
    return JSONResponse(report, status_code=200 if report["dry_run"] else 202)


@requires("admin")
async def delete_image(request: Request) -> Response:
    """``DELETE /admin/v1/images?reference=REPO:TAG&dry_run=true``: delete in the registry; the
    report lists the hosts that still hold a copy."""
    report = await run(service.delete_in_registry, registry(request), request.query_params.get("reference", ""),
                       actor(request), dry_run=_flag(request, "dry_run"))
    return JSONResponse(report)


@host_call
async def host_images(request: Request) -> Response:
    return JSONResponse(await run(service.host_images, registry(request), request.path_params["host"]))


@host_call
async def heartbeat(request: Request) -> Response:
    body = await _json(request, 64 * 1024)
    if not isinstance(body, dict):
        raise _bad("expected an object")
    address, version = body.get("address"), body.get("version")
    await run(service.heartbeat, registry(request), request.path_params["host"],
              address if isinstance(address, str) else None, version if isinstance(version, str) else None)
    return Response(status_code=204)


@host_call
async def inventory(request: Request) -> Response:
    """``PUT /admin/v1/hosts/HOST/inventory``: every image the host holds, one JSON object per line."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_INVENTORY_BYTES:
            raise _bad("inventory too large")
    items = []
    for line in bytes(body).splitlines():
        if line.strip():
            try:
                items.append(check_image(loads_bounded(line)))
            except ValueError as exc:
                raise _bad("a line is not JSON") from exc
    return JSONResponse(await run(service.inventory, registry(request), request.path_params["host"], items))


MAX_WAIT = 30.0
RECHECK = 0.5  # while a poll waits, the queue is read again this often (work queued by another process)


def _signals(request: Request) -> dict:
    if not hasattr(request.app.state, "host_signals"):
        request.app.state.host_signals = {}
    return request.app.state.host_signals


@host_call
async def poll_work(request: Request) -> Response:
    """``GET /admin/v1/hosts/HOST/work?wait=5``: the host's pending work; with ``wait`` (seconds, at
    most 30) a long poll that answers as soon as there is some (work queued through this process
    wakes it at once; otherwise the queue is read again every half second)."""
    name = request.path_params["host"]
    try:
        wait = min(MAX_WAIT, max(0.0, float(request.query_params.get("wait", "0"))))
    except ValueError as exc:
        raise _bad("wait must be a number of seconds") from exc
    deadline = anyio.current_time() + wait
    while True:
        work = await run(service.poll, registry(request), name)
        left = deadline - anyio.current_time()
        if work or left <= 0:
            return JSONResponse({"work": work})
        event = _signals(request).setdefault(name, anyio.Event())
        with anyio.move_on_after(min(left, RECHECK)):
            await event.wait()


@host_call
async def confirm_work(request: Request) -> Response:
    """``POST /admin/v1/hosts/HOST/work/results`` with ``{"results": [{"id", "ok", "error", "image"}]}``."""
    body = await _json(request)
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list) or len(results) > MAX_RESULTS:
        raise _bad("results must be a list")
    checked = []
    for r in results:
        if (not isinstance(r, dict) or isinstance(r.get("id"), bool) or not isinstance(r.get("id"), int)
                or not 0 < r["id"] <= 2**62):
            raise _bad("each result needs an integer id")
        image = check_image(r["image"]) if r.get("ok") and r.get("image") is not None else None
        checked.append({"id": r["id"], "ok": bool(r.get("ok")), "error": str(r.get("error") or "")[:2000],
                        "image": image})
    return JSONResponse(await run(service.confirm, registry(request), request.path_params["host"], checked))


def routes() -> list:
    from starlette.routing import Route

    h = "/admin/v1/hosts/{host}"
    return [
        Route("/admin/v1/hosts", list_hosts, methods=["GET"]),
        Route(h, add_host, methods=["POST"]),
        Route(h, remove_host, methods=["DELETE"]),
        Route(h + "/images", host_images, methods=["GET"]),
        Route(h + "/heartbeat", heartbeat, methods=["POST"]),
        Route(h + "/inventory", inventory, methods=["PUT"]),
        Route(h + "/work", poll_work, methods=["GET"]),
        Route(h + "/work", queue_work, methods=["POST"]),
        Route(h + "/work/results", confirm_work, methods=["POST"]),
        Route("/admin/v1/images", delete_image, methods=["DELETE"]),
    ]
