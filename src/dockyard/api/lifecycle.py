"""Admin routes of the lifecycle engine (admin role), and the metrics endpoint."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dockyard.lifecycle import inuse, prune, rules, scheduler, trash
from dockyard.api.auth import requires
from dataclasses import asdict

from dockyard.api.common import actor, page_size, registry, run
from dockyard.policies import Policy
from dockyard.lifecycle.scrubber import Scrubber
from dockyard.config import ConfigError, parse_bool, parse_duration
from dockyard.errors import RegistryError
from dockyard.lifecycle.collector import Collector, GcOptions
from dockyard.lifecycle.fsck import Fsck
from dockyard.metrics import CONTENT_TYPE
from dockyard.oci.manifest import JSONTooDeep, loads_bounded


def _grace(text: str) -> float:
    if text.strip().replace(".", "", 1).isdigit():
        raise ConfigError(f"grace {text.strip()!r} needs a unit (e.g. 10m, 1h)")
    return parse_duration(text)


def _flag(request: Request, name: str) -> bool:
    try:
        return parse_bool(request.query_params.get(name, "false"))
    except ValueError as exc:
        raise RegistryError("UNSUPPORTED", f"invalid value for {name}", {name: request.query_params[name]},
                            status=400) from exc


@requires("admin")
async def start_gc(request: Request) -> Response:
    """``POST /admin/v1/gc?dry_run=true&grace=10m``: run a collection now and answer its report."""
    grace = request.query_params.get("grace")
    try:
        collector = Collector.for_registry(registry(request), dry_run=_flag(request, "dry_run"),
                                           grace=_grace(grace) if grace else None)
    except ValueError as exc:  # no unit, below the floor, longer than gc_delay
        raise RegistryError("UNSUPPORTED", str(exc), {"grace": (grace or "")[:40]}, status=400) from exc
    report = await run(collector.run)
    return JSONResponse(await run(collector.summary, report))


@requires("admin")
async def fsck_report(request: Request) -> Response:
    """``POST /admin/v1/fsck?verify=true``: reconcile storage with the database, report only
    (no leak is deleted, nothing re-queued: ``dockyard fsck --delete`` runs beside the data)."""
    reg = registry(request)
    checker = Fsck(reg.db, reg.storage, reg.clock, reg.config.fsck_grace, delete=False,
                   verify=_flag(request, "verify"), gc=GcOptions.from_config(reg.config), requeue=False)
    return JSONResponse((await run(checker.run)).as_dict())


@requires("admin")
async def gc_status(request: Request) -> Response:
    """``GET /admin/v1/gc?runs=10``: the backlog of every queue and the last runs' reports (at most
    500, the history kept per job)."""
    runs = min(500, page_size(request.query_params.get("runs", "10"), "runs"))
    return JSONResponse(await run(scheduler.gc_status, registry(request), runs))


@requires("admin")
async def start_scrub(request: Request) -> Response:
    """``POST /admin/v1/scrub?dry_run=true``: purge due trashed images and collect their data now."""
    scrubber = Scrubber.for_registry(registry(request), dry_run=_flag(request, "dry_run"))
    report = await run(scrubber.run)
    return JSONResponse(report.as_dict())


@requires("admin")
async def trash_list(request: Request) -> Response:
    """``GET /admin/v1/trash?repository=team/*&limit=100``."""
    limit = page_size(request.query_params.get("limit", "1000"), "limit")
    return JSONResponse(await run(trash.listing, registry(request), request.query_params.get("repository"), limit))


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
    found = await run(rules.policies, registry(request))
    return JSONResponse({name: p.to_doc() for name, p in sorted(found.items())})


@requires("admin")
async def put_policy(request: Request) -> Response:
    """``PUT /admin/v1/policies/NAME`` with the policy as a JSON object."""
    name = request.path_params["policy"]
    try:
        body = loads_bounded(await request.body())
        policy = Policy.parse(name, body)
    except ValueError as exc:
        raise RegistryError("UNSUPPORTED", "invalid policy", {"reason": str(exc)}, status=400) from exc
    reg = registry(request)
    if name in reg.config.retention:
        raise RegistryError("DENIED", "a policy of that name is declared in the configuration file",
                            {"policy": name}, status=403)
    await run(rules.store_policy, reg, name, policy, actor(request))
    return JSONResponse(policy.to_doc(), status_code=201)


@requires("admin")
async def delete_policy(request: Request) -> Response:
    if not await run(rules.delete_policy, registry(request), request.path_params["policy"]):
        raise RegistryError("NAME_UNKNOWN", "no such policy (configured policies cannot be deleted here)",
                            {"policy": request.path_params["policy"]}, status=404)
    return Response(status_code=204)


def _check_inuse_body(body: str) -> None:
    """A JSON body of in-use references must have the shape of kubectl's output (what
    :func:`dockyard.lifecycle.inuse.load` reads): a 400 here, not a TypeError there."""
    if not body.lstrip().startswith(("{", "[")):
        return  # one reference per line

    def bad(reason: str) -> RegistryError:
        return RegistryError("UNSUPPORTED", "the body is neither kubectl JSON nor a list of references",
                             {"reason": reason}, status=400)

    try:
        doc = loads_bounded(body)
    except JSONTooDeep as exc:
        raise bad(str(exc)) from exc
    except ValueError:
        return  # inuse reports it as an invalid reference source (ignore_invalid_refs applies)
    items = doc.get("items", [doc]) if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise bad("items must be a list of Kubernetes objects")
    for item in items:
        if not isinstance(item.get("metadata") or {}, dict):
            raise bad("metadata must be an object")
    lists = inuse._CONTAINER_LISTS + inuse._STATUS_LISTS  # the keys inuse iterates without looking
    level = list(items)  # every object at any depth, as inuse walks them
    while level:
        below = []
        for node in level:
            if isinstance(node, dict):
                for key in lists:
                    if not isinstance(node.get(key) or [], list):
                        raise bad(f"{key} must be a list")
                below.extend(v for k, v in node.items() if k not in lists)
            elif isinstance(node, list):
                below.extend(node)
        level = below


@requires("admin")
async def run_prune(request: Request) -> Response:
    """``POST /admin/v1/prune?policy=NAME&confirm=true``: preview (default) or run a policy.
    The body may carry in-use references: kubectl JSON or one reference per line."""
    reg = registry(request)
    name = request.query_params.get("policy", "")
    found = await run(rules.policies, reg)
    adhoc = {k: request.query_params[k] for k in ("keep_tag_revisions", "keep_pushed_within", "keep_recent")
             if request.query_params.get(k)}
    if adhoc and not name:  # the flags of dockyard prune, as the CLI's --server sends them
        try:
            found = {"ad-hoc": Policy.parse("ad-hoc", {k: int(v) if k != "keep_pushed_within" else v
                                                       for k, v in adhoc.items()})}
        except ValueError as exc:
            raise RegistryError("UNSUPPORTED", "invalid ad-hoc policy", {"reason": str(exc)}, status=400) from exc
        name = "ad-hoc"
    if name not in found:
        raise RegistryError("NAME_UNKNOWN", "no such policy", {"policy": name, "known": sorted(found)}, status=404)
    body = (await request.body()).decode("utf-8", errors="replace")
    _check_inuse_body(body)
    used = inuse.load([("request body", body)] if body.strip() else [])
    if used.invalid and not _flag(request, "ignore_invalid_refs"):
        raise RegistryError("UNSUPPORTED", "references could not be parsed; nothing was pruned",
                            {"invalid": [t for t, _ in used.invalid[:50]]}, status=400)
    pruner = prune.Pruner(reg, found[name], used, confirm=_flag(request, "confirm"), actor=actor(request),
                          repository=request.query_params.get("repository"))
    return JSONResponse((await run(pruner.run)).as_dict())


@requires("admin")
async def prune_audit(request: Request) -> Response:
    return JSONResponse(await run(rules.prune_audit, registry(request)))


@requires("pull")
async def metrics(request: Request) -> Response:
    """``GET /metrics``: Prometheus text format (scrape-time values read the database: a thread)."""
    return Response(await run(registry(request).metrics.render), media_type=CONTENT_TYPE)
