"""Admin routes of the lifecycle engine (admin role), and the metrics endpoint."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from dockyard.api.auth import requires
from dataclasses import asdict

from dockyard.api.common import actor, registry, run
from dockyard.lifecycle import inuse, prune
from dockyard.lifecycle.policies import Policy
from dockyard.lifecycle.scrubber import Scrubber
from dockyard.meta.retention import RetentionStore
from dockyard.registry import trash
from dockyard.config import parse_bool
from dockyard.errors import RegistryError
from dockyard.lifecycle.collector import Collector
from dockyard.meta.gc import QueueStore


def _flag(request: Request, name: str) -> bool:
    try:
        return parse_bool(request.query_params.get(name, "false"))
    except ValueError as exc:
        raise RegistryError("UNSUPPORTED", f"invalid value for {name}", {name: request.query_params[name]},
                            status=400) from exc


@requires("admin")
async def start_gc(request: Request) -> Response:
    """``POST /admin/v1/gc?dry_run=true``: run a collection now and answer its report."""
    collector = Collector.for_registry(registry(request), dry_run=_flag(request, "dry_run"))
    report = await run(collector.run)
    return JSONResponse(report.as_dict())


@requires("admin")
async def gc_status(request: Request) -> Response:
    """``GET /admin/v1/gc``: the backlog of every queue and the last runs' reports."""
    reg = registry(request)

    def status():
        with reg.db.read() as conn:
            q = QueueStore(conn)
            return {"backlog": q.backlog(reg.now()), "runs": q.recent_runs("gc", 10)}

    return JSONResponse(await run(status))


@requires("admin")
async def start_scrub(request: Request) -> Response:
    """``POST /admin/v1/scrub?dry_run=true``: purge due trashed images and collect their data now."""
    scrubber = Scrubber.for_registry(registry(request), dry_run=_flag(request, "dry_run"))
    report = await run(scrubber.run)
    return JSONResponse(report.as_dict())


@requires("admin")
async def trash_list(request: Request) -> Response:
    """``GET /admin/v1/trash?repository=team/*&limit=100``."""
    limit = request.query_params.get("limit", "1000")
    if not limit.isdigit():
        raise RegistryError("PAGINATION_NUMBER_INVALID", "limit must be a number", {"limit": limit})
    return JSONResponse(await run(trash.listing, registry(request), request.query_params.get("repository"),
                                  int(limit)))


def _reference(request: Request) -> str:
    ref = request.query_params.get("reference")
    if not ref:
        raise RegistryError("NAME_INVALID", "reference=<repository>@<digest> or <repository>:<tag> is required")
    return ref


@requires("admin")
async def trash_restore(request: Request) -> Response:
    """``POST /admin/v1/trash/restore?reference=team/app@sha256:...`` (or ``team/app:tag``)."""
    result = await run(trash.restore, registry(request), _reference(request), actor(request))
    return JSONResponse(asdict(result))


@requires("admin")
async def trash_purge(request: Request) -> Response:
    """``POST /admin/v1/trash/purge?reference=team/app@sha256:...&dry_run=true``: purge one image now."""
    result = await run(trash.purge, registry(request), _reference(request), dry_run=_flag(request, "dry_run"),
                       actor=actor(request))
    return JSONResponse(asdict(result))


@requires("admin")
async def list_policies(request: Request) -> Response:
    found = await run(prune.policies, registry(request))
    return JSONResponse({name: p.to_doc() for name, p in sorted(found.items())})


@requires("admin")
async def put_policy(request: Request) -> Response:
    """``PUT /admin/v1/policies/NAME`` with the policy as a JSON object."""
    name = request.path_params["policy"]
    try:
        body = await request.json()
        policy = Policy.parse(name, body)
    except ValueError as exc:
        raise RegistryError("UNSUPPORTED", "invalid policy", {"reason": str(exc)}, status=400) from exc
    reg = registry(request)
    if name in reg.config.retention:
        raise RegistryError("DENIED", "a policy of that name is declared in the configuration file",
                            {"policy": name}, status=403)

    def store():
        with reg.db.write() as conn:
            RetentionStore(conn).put_policy(name, policy.to_doc(), reg.now(), actor(request))

    await run(store)
    return JSONResponse(policy.to_doc(), status_code=201)


@requires("admin")
async def delete_policy(request: Request) -> Response:
    reg = registry(request)

    def drop():
        with reg.db.write() as conn:
            return RetentionStore(conn).delete_policy(request.path_params["policy"])

    if not await run(drop):
        raise RegistryError("NAME_UNKNOWN", "no such policy (configured policies cannot be deleted here)",
                            {"policy": request.path_params["policy"]}, status=404)
    return Response(status_code=204)


@requires("admin")
async def run_prune(request: Request) -> Response:
    """``POST /admin/v1/prune?policy=NAME&confirm=true``: preview (default) or run a policy.
    The body may carry in-use references: kubectl JSON or one reference per line."""
    reg = registry(request)
    name = request.query_params.get("policy", "")
    found = await run(prune.policies, reg)
    if name not in found:
        raise RegistryError("NAME_UNKNOWN", "no such policy", {"policy": name, "known": sorted(found)}, status=404)
    body = (await request.body()).decode("utf-8", errors="replace")
    used = inuse.load([("request body", body)] if body.strip() else [])
    if used.invalid and not _flag(request, "ignore_invalid_refs"):
        raise RegistryError("UNSUPPORTED", "references could not be parsed; nothing was pruned",
                            {"invalid": [t for t, _ in used.invalid[:50]]}, status=400)
    pruner = prune.Pruner(reg, found[name], used, confirm=_flag(request, "confirm"), actor=actor(request),
                          repository=request.query_params.get("repository"))
    return JSONResponse((await run(pruner.run)).as_dict())


@requires("admin")
async def prune_audit(request: Request) -> Response:
    reg = registry(request)

    def read():
        with reg.db.read() as conn:
            return RetentionStore(conn).audit_log()

    return JSONResponse(await run(read))


@requires("pull")
async def metrics(request: Request) -> Response:
    return PlainTextResponse(registry(request).metrics.render(), media_type="text/plain; version=0.0.4")
