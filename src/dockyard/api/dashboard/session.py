"""Dashboard login: a signed session cookie for the admin role, and CSRF tokens for its forms.

The password check is the registry's own (:meth:`Authenticator.verify`: htpasswd, bcrypt,
lockout of an address after failed logins). The cookie holds the user and an expiry,
signed with the token secret (HMAC-SHA256); it is HttpOnly, SameSite=Strict, and Secure
when the dashboard is reached over HTTPS. Every POST carries a CSRF token derived from
the session (HMAC of the cookie), so a page of another site cannot submit a form.
Without authentication (``auth_htpasswd`` unset) the anonymous role applies: if it is
admin, a session for ``anonymous`` is issued without a form.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response

from dockyard.api.auth import Authenticator, Identity, _b64, _unb64

COOKIE = "dockyard_session"
LIFETIME = 8 * 3600.0  # seconds a dashboard login lasts
MAX_FORM = 16 * 1024  # bytes of a form body


def _sign(auth: Authenticator, purpose: str, text: str) -> str:
    return _b64(hmac.new(auth.secret, f"{purpose}|{text}".encode(), hashlib.sha256).digest())


def issue(auth: Authenticator, user: str) -> str:
    body = _b64(json.dumps({"u": user, "exp": int(auth.clock() + LIFETIME)}, separators=(",", ":")).encode())
    return f"{body}.{_sign(auth, 'dashboard', body)}"


def session_identity(request: Request) -> Identity | None:
    """The admin identity of a valid session cookie, else None. The role is looked up now
    (a user demoted in ``auth_roles`` loses the dashboard at the next restart)."""
    auth: Authenticator = request.app.state.auth
    value = request.cookies.get(COOKIE, "")
    body, _, sig = value.partition(".")
    if not body or not sig.isascii() or not hmac.compare_digest(sig, _sign(auth, "dashboard", body)):
        return None
    try:
        claims = json.loads(_unb64(body))
    except ValueError:
        return None
    if not isinstance(claims, dict) or not isinstance(claims.get("exp"), int) or claims["exp"] < auth.clock():
        return None
    user = claims.get("u")
    if user == "anonymous" and auth.anonymous.role == "admin":
        return Identity(None, "admin")
    if not isinstance(user, str) or user not in auth.users or auth.role_of(user) != "admin":
        return None
    return Identity(user, "admin")


def set_cookie(request: Request, response: Response, value: str) -> None:
    response.set_cookie(COOKIE, value, max_age=int(LIFETIME), path="/dashboard", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


def clear_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/dashboard")


def csrf_token(request: Request) -> str:
    return _sign(request.app.state.auth, "csrf", request.cookies.get(COOKIE, "") or getattr(
        request.state, "new_session", ""))


async def read_form(request: Request) -> dict[str, str]:
    """A urlencoded form body (at most :data:`MAX_FORM` bytes); the first value of each field."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            return {}
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=32)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {k: v[0] for k, v in fields.items()}


def csrf_ok(request: Request, form: dict[str, str]) -> bool:
    token = form.get("csrf", "")
    return bool(request.cookies.get(COOKIE)) and token.isascii() and hmac.compare_digest(token, csrf_token(request))


def same_origin(request: Request) -> bool:
    """A login form posted from a page of this site (Origin, if the browser sends one)."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    return origin.split("://", 1)[-1] == request.headers.get("host", "")
