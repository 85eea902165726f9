"""Admin routes of events (admin role): ``GET /admin/v1/events``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dockyard.api import webhooks
from dockyard.api.auth import requires
from dockyard.api.common import page_size, registry, run
from dockyard.errors import RegistryError
from dockyard.events import KINDS


@requires("admin")
async def list_events(request: Request) -> Response:
    """``GET /admin/v1/events?limit=100&kind=push&repository=team/app``: newest first, with
    each event's delivery state per endpoint."""
    q = request.query_params
    limit = page_size(q.get("limit", "100"), "limit")
    kind = q.get("kind") or None
    if kind is not None and kind not in KINDS:
        raise RegistryError("UNSUPPORTED", "unknown event kind", {"kind": kind, "kinds": list(KINDS)}, status=400)
    return JSONResponse(await run(webhooks.listing, registry(request), limit, kind, q.get("repository") or None))
