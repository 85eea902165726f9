"""Templates (Jinja2, shipped in the package) and the page wrapper every dashboard view uses:
admin session required, errors shown as a page with their status, never a traceback."""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Awaitable, Callable
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from dockyard.api.dashboard import session
from dockyard.api.errors import status_and_headers
from dockyard.errors import RegistryError

log = logging.getLogger(__name__)
HERE = Path(__file__).parent


def human_bytes(n) -> str:
    if n is None:
        return "—"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


def when(ts) -> str:
    return "—" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def duration(seconds) -> str:
    if seconds is None:
        return "—"
    s = abs(float(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s / size:.1f} {unit}"
    return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"


def short(digest: str | None) -> str:
    return "—" if not digest else digest.split(":", 1)[-1][:12]


IMAGE_CONFIGS = ("application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json")


def kind(image) -> str:
    """What a manifest is, in a word: image, index, or its artifact type."""
    if "index" in image.media_type or "manifest.list" in image.media_type:
        return "index"
    if image.artifact_type and image.artifact_type not in IMAGE_CONFIGS:
        return image.artifact_type
    return "image"


ENV = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                  trim_blocks=True, lstrip_blocks=True)
ENV.filters.update(kind=kind, bytes=human_bytes, when=when, duration=duration, short=short,
                   url=lambda s: quote(str(s), safe="/"))
ENV.globals["urlencode"] = urlencode


def render(request: Request, template: str, status: int = 200, **context) -> HTMLResponse:
    identity = getattr(request.state, "identity", None)
    html = ENV.get_template(template).render(
        request=request, user=(identity.user or "anonymous") if identity else None,
        csrf=session.csrf_token(request) if identity else "", message=request.query_params.get("msg", "")[:300],
        **context)
    return HTMLResponse(html, status_code=status)


def error_page(request: Request, exc: RegistryError) -> HTMLResponse:
    status, headers = status_and_headers(exc)
    response = render(request, "error.html", status=status, code=exc.code, text=str(exc), detail=exc.detail)
    if "Retry-After" in headers:
        response.headers["Retry-After"] = headers["Retry-After"]
    return response


def page(handler: Callable[[Request], Awaitable[Response]]):
    """An admin page: a valid session (else the login form), errors rendered as a page."""

    @functools.wraps(handler)
    async def inner(request: Request) -> Response:
        identity = session.session_identity(request)
        new_cookie = None
        if identity is None:
            auth = request.app.state.auth
            if auth.enabled or auth.anonymous.role != "admin":
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse("/dashboard/login?" + urlencode({"next": target}), status_code=303)
            new_cookie = session.issue(auth, "anonymous")  # an open registry: admin without a form
            request.state.new_session = new_cookie
            identity = session.Identity(None, "admin")
        request.state.identity = identity
        try:
            response = await handler(request)
        except RegistryError as exc:
            log.info("dashboard %s: %s %s", request.url.path, exc.code, exc)
            response = error_page(request, exc)
        if new_cookie:
            session.set_cookie(request, response, new_cookie)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Content-Security-Policy",
                                    "default-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'")
        return response

    return inner


def number(request: Request, name: str, default: int, maximum: int = 10**9) -> int:
    value = request.query_params.get(name, "")
    if not value:
        return default
    if not value.isascii() or not value.isdigit() or len(value) > 10:
        raise RegistryError("PAGINATION_NUMBER_INVALID", f"{name} must be a number", {name: value[:40]})
    return min(int(value), maximum)
