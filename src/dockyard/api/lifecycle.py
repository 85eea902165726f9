"""Admin routes of the lifecycle engine (admin role), and the metrics endpoint."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from dockyard.api.auth import requires
from dockyard.api.common import registry, run
from dockyard.config import parse_bool
from dockyard.errors import RegistryError
from dockyard.lifecycle.collector import Collector
from dockyard.meta.gc import QueueStore


def _flag(request: Request, name: str) -> bool:
    try:
        return parse_bool(request.query_params.get(name, "false"))
    except ValueError as exc:
        raise RegistryError("UNSUPPORTED", f"invalid value for {name}", {name: request.query_params[name]}) from exc


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


@requires("pull")
async def metrics(request: Request) -> Response:
    return PlainTextResponse(registry(request).metrics.render(), media_type="text/plain; version=0.0.4")
