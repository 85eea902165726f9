"""``GET /v2/``: the API version check."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dockyard.api.auth import requires


@requires("pull", "ping")
async def version_check(request: Request) -> Response:
    return JSONResponse({}, headers={"Docker-Distribution-API-Version": "registry/2.0"})
