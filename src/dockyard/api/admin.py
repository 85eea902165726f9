"""Admin routes (admin role only)."""

from __future__ import annotations

from dataclasses import asdict

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dockyard.lifecycle import deletes
from dockyard.api.auth import requires
from dockyard.api.common import actor, registry, repo_name, run


@requires("admin")
async def delete_repository(request: Request) -> Response:
    report = await run(deletes.delete_repository, registry(request), repo_name(request), actor(request))
    return JSONResponse(asdict(report), status_code=202)
