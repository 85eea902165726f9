"""The dashboard's forms (POST): login, logout, restore and purge from the trash.

Every POST but the login checks the CSRF token of the session; the login checks that the
form came from this site and uses the registry's own password check and lockout."""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from dockyard.api.common import registry, run
from dockyard.api.dashboard import session
from dockyard.api.dashboard.render import page, render
from dockyard.errors import RegistryError
from dockyard.lifecycle import trash

log = logging.getLogger(__name__)


def _safe_next(target: str) -> str:
    """Only a path of the dashboard (no other host, no scheme-relative URL)."""
    return target if target.startswith("/dashboard") and not target.startswith("//") else "/dashboard/"


async def login_form(request: Request) -> Response:
    if session.session_identity(request) is not None:
        return RedirectResponse(_safe_next(request.query_params.get("next", "")), status_code=303)
    auth = request.app.state.auth
    if not auth.enabled and auth.anonymous.role == "admin":
        return RedirectResponse("/dashboard/", status_code=303)
    return render(request, "login.html", next=_safe_next(request.query_params.get("next", "")), error="",
                  enabled=auth.enabled)


async def login(request: Request) -> Response:
    auth = request.app.state.auth
    form = await session.read_form(request)
    target = _safe_next(form.get("next", ""))

    def again(error: str, status: int) -> Response:
        return render(request, "login.html", status=status, next=target, error=error, enabled=auth.enabled)

    if not session.same_origin(request):
        return again("The form was not sent from this site.", 403)
    if not auth.enabled:
        return again("This registry has no users (auth_htpasswd is not set).", 400)
    user, password = form.get("user", ""), form.get("password", "")
    try:
        ok = bool(user) and await auth.verify(auth.client_address(request), user, password)
    except RegistryError as exc:  # locked out after failed logins, or too many logins at once
        return again(f"{exc} — try again in {exc.headers.get('Retry-After', 'a few')} seconds.", 429)
    if not ok:
        return again("Wrong user name or password.", 401)
    if auth.role_of(user) != "admin":
        return again(f"{user} does not have the admin role.", 403)
    log.info("dashboard login by %s", user)
    response = RedirectResponse(target, status_code=303)
    session.set_cookie(request, response, session.issue(auth, user))
    return response


async def logout(request: Request) -> Response:
    form = await session.read_form(request)
    if session.session_identity(request) is not None and not session.csrf_ok(request, form):
        return Response("invalid CSRF token", status_code=403)
    response = RedirectResponse("/dashboard/login", status_code=303)
    session.clear_cookie(response)
    return response


def _back(message: str) -> Response:
    return RedirectResponse("/dashboard/reclaimable?" + urlencode({"msg": message}), status_code=303)


async def _checked_form(request: Request) -> dict[str, str]:
    form = await session.read_form(request)
    if not session.csrf_ok(request, form):
        raise RegistryError("DENIED", "invalid or missing CSRF token: reload the page and try again", status=403)
    return form


@page
async def restore(request: Request) -> Response:
    form = await _checked_form(request)
    actor = request.state.identity.user or "anonymous"
    result = await run(trash.restore, registry(request), form.get("reference", ""), actor)
    skipped = "; ".join(f"{t}: {why}" for t, why in result.skipped_tags.items())
    return _back(f"Restored {result.reference} (tags: {', '.join(result.restored_tags) or 'none'})"
                 + (f"; not restored: {skipped}" if skipped else ""))


@page
async def purge(request: Request) -> Response:
    form = await _checked_form(request)
    actor = request.state.identity.user or "anonymous"
    result = await run(trash.purge, registry(request), form.get("reference", ""), actor=actor)
    return _back(f"Purged {result.reference}: {result.bytes_freed} bytes go with the next collection after gc_delay")
