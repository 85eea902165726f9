"""Authentication (htpasswd basic auth, bearer tokens) and the one role check.

Roles are ordered: ``pull`` < ``push`` < ``admin``. A route declares the role it
needs with :func:`requires`; nothing else in the API checks permissions.

Without ``auth_htpasswd`` every request has ``anonymous_role`` (default admin: the
embedded default listens on loopback only). With it, clients log in with basic
auth, or follow the ``WWW-Authenticate: Bearer`` challenge to ``/auth/token``
(as ``docker login`` and ``skopeo login`` do) and send the token.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

import bcrypt
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dockyard.config import Config
from dockyard.errors import RegistryError

RANK = {"none": 0, "pull": 1, "push": 2, "admin": 3}


@dataclass(frozen=True, slots=True)
class Identity:
    user: str | None
    role: str

    def allows(self, role: str) -> bool:
        return RANK[self.role] >= RANK[role]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Authenticator:
    def __init__(self, cfg: Config, clock: Callable[[], float] = time.time):
        self.cfg = cfg
        self.clock = clock
        self.enabled = bool(cfg.auth_htpasswd)
        self.anonymous = Identity(None, cfg.effective_anonymous_role)
        self.users: dict[str, bytes] = {}
        if self.enabled:
            self.users = self._load_htpasswd(Path(cfg.auth_htpasswd))
        self.secret = self._secret(cfg)
        self._verified: dict[tuple[str, bytes], bool] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _load_htpasswd(path: Path) -> dict[str, bytes]:
        users = {}
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and ":" in line:
                user, _, hashed = line.partition(":")
                users[user] = hashed.encode()
        return users

    @staticmethod
    def _secret(cfg: Config) -> bytes:
        if cfg.token_secret:
            return cfg.token_secret.encode()
        path = cfg.data_path / "token-secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_hex(32))
            path.chmod(0o600)
        return path.read_text().strip().encode()

    def role_of(self, user: str) -> str:
        return self.cfg.auth_roles.get(user, self.cfg.auth_default_role)

    # ---- credentials -----------------------------------------------------
    def check_password(self, user: str, password: str) -> bool:
        hashed = self.users.get(user)
        if hashed is None:
            return False
        key = (user, hashlib.sha256(password.encode()).digest())
        with self._lock:
            cached = self._verified.get(key)
        if cached is not None:
            return cached
        try:
            ok = bcrypt.checkpw(password.encode(), hashed.replace(b"$2y$", b"$2b$", 1))
        except ValueError:
            ok = False
        with self._lock:
            if len(self._verified) > 10_000:
                self._verified.clear()
            self._verified[key] = ok
        return ok

    def issue_token(self, user: str) -> dict:
        """The token endpoint's answer: token, lifetime and issue time (clients compute expiry from both)."""
        ttl = int(self.cfg.token_ttl)
        now = self.clock()
        claims = {"sub": user, "role": self.role_of(user), "exp": int(now) + ttl}
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        sig = _b64(hmac.new(self.secret, body.encode(), hashlib.sha256).digest())
        token = f"{body}.{sig}"
        issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        return {"token": token, "access_token": token, "expires_in": ttl, "issued_at": issued}

    def check_token(self, token: str) -> Identity | None:
        body, _, sig = token.partition(".")
        expected = _b64(hmac.new(self.secret, body.encode(), hashlib.sha256).digest())
        if not sig or not hmac.compare_digest(sig, expected):
            return None
        try:
            claims = json.loads(_unb64(body))
        except ValueError:
            return None
        sub = claims.get("sub")
        if claims.get("exp", 0) < self.clock():
            return None
        if sub not in self.users:
            return self.anonymous if sub == "anonymous" else None
        return Identity(sub, self.role_of(sub))

    def _basic(self, value: str) -> tuple[str, str] | None:
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return user, password

    # ---- per request -----------------------------------------------------
    def identify(self, request: Request) -> Identity:
        if not self.enabled:
            return self.anonymous
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            creds = self._basic(value.strip())
            if creds and self.check_password(*creds):
                return Identity(creds[0], self.role_of(creds[0]))
            raise self.challenge(request, "invalid credentials")
        if scheme == "bearer":
            identity = self.check_token(value.strip())
            if identity is None:
                raise self.challenge(request, "invalid or expired token")
            return identity
        return self.anonymous

    def challenge(self, request: Request, message: str = "authentication required") -> RegistryError:
        realm = f"{request.url.scheme}://{request.url.netloc}/auth/token"
        return RegistryError("UNAUTHORIZED", message, status=401, headers={
            "WWW-Authenticate": f'Bearer realm="{realm}",service="dockyard"',
        })


DRAIN_LIMIT = 64 * 1024 * 1024


async def _drain(request: Request) -> None:
    """Read and drop an unread request body before an error answer, so the
    connection stays usable for the client's next request."""
    if request.method not in ("POST", "PUT", "PATCH") or getattr(request, "_stream_consumed", True):
        return
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > DRAIN_LIMIT:
            return


def requires(role: str):
    """The single permission check: ``@requires("push")`` on a route handler."""

    def wrap(handler: Callable[[Request], Awaitable[Response]]):
        @functools.wraps(handler)
        async def inner(request: Request) -> Response:
            auth: Authenticator = request.app.state.auth
            try:
                identity = auth.identify(request)
                if not identity.allows(role):
                    if identity.user is None:
                        raise auth.challenge(request)
                    raise RegistryError("DENIED", f"requires the {role} role", {"user": identity.user}, status=403)
                request.state.identity = identity
                return await handler(request)
            except RegistryError:
                await _drain(request)
                raise

        inner.required_role = role  # type: ignore[attr-defined]
        return inner

    return wrap


async def token_endpoint(request: Request) -> Response:
    """``GET /auth/token``: basic credentials in, bearer token out (docker token protocol)."""
    auth: Authenticator = request.app.state.auth
    if not auth.enabled:
        return JSONResponse(auth.issue_token("anonymous"))
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    creds = auth._basic(value.strip()) if scheme.lower() == "basic" else None
    if not creds or not auth.check_password(*creds):
        if auth.anonymous.role != "none" and not header:
            return JSONResponse(auth.issue_token("anonymous"))
        raise RegistryError("UNAUTHORIZED", "invalid credentials", status=401,
                            headers={"WWW-Authenticate": 'Basic realm="dockyard"'})
    return JSONResponse(auth.issue_token(creds[0]))
