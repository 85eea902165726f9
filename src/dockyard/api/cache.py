"""Admin routes of the blob cache (admin role; Glance's names), fanned out to every replica.

A call reaches this replica's cache and, unless it carries ``scope=local``, every other live
replica registered in the shared database (``cache_replicas``): the same call with
``scope=local`` and the caller's credentials, in parallel. The answer holds each replica's own
answer under ``replicas`` (an address that did not answer gets ``{"error": ...}``) and the
totals summed over them, so an operator never has to bypass the load balancer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from typing import Any, Callable
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dockyard.api.auth import requires
from dockyard.api.common import page_size, registry, run
from dockyard.api.lifecycle import _flag
from dockyard.cache import maintenance, prefetch
from dockyard.cache.jobs import advertise_address, live_replicas
from dockyard.errors import RegistryError
from dockyard.registry.context import Registry
from dockyard.validate import check_digest

log = logging.getLogger(__name__)
PEER_TIMEOUT = 120.0


def _call_peer(address: str, request: Request) -> dict:
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "scope"] + [("scope", "local")]
    url = f"{address}{request.url.path}?{urlencode(query)}"
    headers = {"Accept": "application/json"}
    if "authorization" in request.headers:
        headers["Authorization"] = request.headers["authorization"]
    req = urllib.request.Request(url, method=request.method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=PEER_TIMEOUT) as resp:  # noqa: S310 (a registered peer)
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read() or b"{}")
        except ValueError:
            body = {}
        return {"error": f"HTTP {exc.code}", "detail": body}
    except (OSError, ValueError) as exc:
        log.warning("cache fan-out: replica %s did not answer (%s)", address, exc)
        return {"error": str(exc)[:200]}


async def _everywhere(request: Request, local: Callable[[Registry], dict], totals: tuple[str, ...],
                      status: int = 200) -> Response:
    reg = registry(request)
    mine = await run(local, reg) if reg.cache is not None else {"enabled": False}
    if request.query_params.get("scope") == "local":
        return JSONResponse(mine, status_code=status)
    me = advertise_address(reg.config)
    peers = [a for a in await run(live_replicas, reg) if a != me]
    answers = await asyncio.gather(*(run_in_threadpool(_call_peer, p, request) for p in peers))
    replicas: dict[str, Any] = {me: mine, **dict(zip(peers, answers))}
    out: dict[str, Any] = {k: sum(r.get(k, 0) for r in replicas.values() if isinstance(r.get(k, 0), (int, float)))
                           for k in totals}
    out["replicas"] = replicas
    out["failed_replicas"] = sorted(a for a, r in replicas.items() if "error" in r)
    return JSONResponse(out, status_code=status)


@requires("admin")
async def cache_list(request: Request) -> Response:
    """``GET /admin/v1/cache?limit=1000``: entries (size, hits, last access, pinned) and queued prefetches."""
    limit = page_size(request.query_params.get("limit", "1000"), "limit")
    return await _everywhere(request, lambda reg: maintenance.listing(reg.cache, limit),
                             ("total_entries", "total_bytes", "queue_length"))


@requires("admin")
async def cache_prefetch(request: Request) -> Response:
    """``PUT /admin/v1/cache/{reference-or-digest}?pin=true``: queue a prefetch on every replica."""
    target = prefetch.canonical_target(request.path_params["target"])  # a 400 before anything is queued
    pin = _flag(request, "pin")
    reg = registry(request)
    if reg.cache is None and not await run(live_replicas, reg):  # nothing could queue it: not a 202
        raise RegistryError("UNSUPPORTED", "no replica has a blob cache (storage = s3 and cache_max_size > 0)",
                            status=405)
    return await _everywhere(request, lambda reg: prefetch.enqueue(reg.cache, target, pin, reg.now()), (),
                             status=202)


@requires("admin")
async def cache_delete(request: Request) -> Response:
    """``DELETE /admin/v1/cache/{digest}?dry_run=true``: evict one blob from every replica's cache."""
    digest = str(check_digest(request.path_params["target"]))
    dry_run = _flag(request, "dry_run")

    def local(reg: Registry) -> dict:
        try:
            return maintenance.delete(reg.cache, digest, dry_run=dry_run)
        except RegistryError as exc:
            if exc.code != "BLOB_UNKNOWN":
                raise
            return {"total_files_deleted": 0, "total_bytes_deleted": 0, "cached": False, "dry_run": dry_run}

    return await _everywhere(request, local, ("total_files_deleted", "total_bytes_deleted"))


@requires("admin")
async def cache_clear(request: Request) -> Response:
    """``DELETE /admin/v1/cache?dry_run=true``: evict every entry nobody reads, empty the queue."""
    dry_run = _flag(request, "dry_run")
    return await _everywhere(request, lambda reg: maintenance.clear(reg.cache, dry_run=dry_run),
                             ("total_files_deleted", "total_bytes_deleted", "prefetches_removed"))


@requires("admin")
async def cache_clean(request: Request) -> Response:
    """``POST /admin/v1/cache/clean?dry_run=true&verify=true``."""
    dry_run, verify = _flag(request, "dry_run"), _flag(request, "verify")

    def local(reg: Registry) -> dict:
        report = maintenance.clean(reg.cache, reg.config.cache_stall_time, dry_run=dry_run, verify=verify)
        return report.__dict__ | {}

    return await _everywhere(request, local, ("total_files_cleaned", "total_bytes_cleaned"))


@requires("admin")
async def cache_prune(request: Request) -> Response:
    """``POST /admin/v1/cache/prune?dry_run=true``: evict LRU entries down to the low watermark."""
    dry_run = _flag(request, "dry_run")
    return await _everywhere(request, lambda reg: maintenance.prune(reg.cache, dry_run=dry_run).__dict__ | {},
                             ("total_files_pruned", "total_bytes_pruned"))


def cache_routes(route) -> list:
    return [
        route("/admin/v1/cache", cache_list, methods=["GET"]),
        route("/admin/v1/cache", cache_clear, methods=["DELETE"]),
        route("/admin/v1/cache/clean", cache_clean, methods=["POST"]),
        route("/admin/v1/cache/prune", cache_prune, methods=["POST"]),
        route("/admin/v1/cache/{target:path}", cache_prefetch, methods=["PUT"]),
        route("/admin/v1/cache/{target:path}", cache_delete, methods=["DELETE"]),
    ]
