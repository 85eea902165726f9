"""Admin routes of storage quotas (admin role): ``/admin/v1/quotas[/NAME]``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dockyard.api.auth import requires
from dockyard.api.common import actor, registry, run
from dockyard.errors import RegistryError
from dockyard.lifecycle import quotas
from dockyard.oci.manifest import loads_bounded
from dockyard.quotas import Quota
from dockyard.values import ConfigError


@requires("admin")
async def list_quotas(request: Request) -> Response:
    """``GET /admin/v1/quotas``: every quota in force with its usage in bytes."""
    return JSONResponse(await run(quotas.usage, registry(request)))


@requires("admin")
async def get_quota(request: Request) -> Response:
    name = request.path_params["quota"]
    found = (await run(quotas.usage, registry(request))).get(name)
    if found is None:
        raise RegistryError("NAME_UNKNOWN", "no such quota", {"quota": name}, status=404)
    return JSONResponse(found)


@requires("admin")
async def put_quota(request: Request) -> Response:
    """``PUT /admin/v1/quotas/NAME`` with ``{"repositories": "team-a/*", "hard": "10GiB", "soft": 0.8}``."""
    name = request.path_params["quota"]
    try:
        quota = Quota.parse(name, loads_bounded(await request.body()))
    except (ValueError, ConfigError) as exc:
        raise RegistryError("UNSUPPORTED", "invalid quota", {"reason": str(exc)}, status=400) from exc
    reg = registry(request)
    if name in reg.config.quotas:
        raise RegistryError("DENIED", "a quota of that name is declared in the configuration file",
                            {"quota": name}, status=403)
    return JSONResponse(await run(quotas.store_quota, reg, quota, actor(request)), status_code=201)


@requires("admin")
async def delete_quota(request: Request) -> Response:
    if not await run(quotas.delete_quota, registry(request), request.path_params["quota"]):
        raise RegistryError("NAME_UNKNOWN", "no such quota (configured quotas cannot be deleted here)",
                            {"quota": request.path_params["quota"]}, status=404)
    return Response(status_code=204)
