"""Authentication (htpasswd basic auth, bearer tokens) and the one role check.

Roles are ordered: ``pull`` < ``push`` < ``admin``. A route declares the role it
needs, and where, with :func:`requires`; nothing else in the API checks permissions.
Which role a user has on which repository is :mod:`dockyard.access`'s answer (global
roles plus access rules on repository globs); a bearer token carries the repository
actions the token endpoint granted for the scopes asked, and works only within them.

Without ``auth_htpasswd`` every request has ``anonymous_role`` (default admin: the
embedded default listens on loopback only). With it, clients log in with basic
auth, or follow the ``WWW-Authenticate: Bearer`` challenge to ``/auth/token``
(as ``docker login`` and ``skopeo login`` do) and send the token.

Guessing passwords is made slow and harmless to everyone else: bcrypt runs in worker
threads, at most :data:`VERIFY_SLOTS` at a time with a bounded queue (beyond it: 429);
an unknown user costs one bcrypt of the same cost as a real one (no enumeration by
timing); and each client address gets :data:`FREE_FAILURES` failed logins before it
is locked out for 2, 4, 8 ... :data:`MAX_LOCKOUT` seconds (429 with ``Retry-After``,
without checking the password). Only correct passwords are cached, so the cache
answers a known client without bcrypt and cannot be flooded by guesses.

The htpasswd file is re-read when it changes (its inode, size or mtime, looked at with one
``stat`` at most once a second, in each worker): adding a user, removing one or changing a
password needs no restart. A re-read empties the password cache, so a removed user or an
old password stops working at once.

The client address and the external URL (the ``WWW-Authenticate`` realm) come from
the connection, never from headers a client chose: ``public_url`` when set, else
``X-Forwarded-*`` when the direct peer is in ``trusted_proxies``, else the scheme and
address the server was reached on.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Mapping

import anyio
import anyio.to_thread
import bcrypt
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from dockyard import access
from dockyard.config import Config, ConfigError
from dockyard.errors import RegistryError
from dockyard.hosts import service as hosts_service
from dockyard.oci.names import is_valid_name

log = logging.getLogger(__name__)

RANK = access.RANK

VERIFY_SLOTS = max(1, len(os.sched_getaffinity(0)) // 2 if hasattr(os, "sched_getaffinity")
                   else (os.cpu_count() or 1) // 2)  # concurrent bcrypt checks: half the CPUs
VERIFY_QUEUE = 16 * VERIFY_SLOTS  # checks that may wait for a slot; more are refused (429)
FREE_FAILURES = 5  # failed logins an address gets before it is locked out
MAX_LOCKOUT = 300.0  # seconds; the lockout doubles with each further failure, up to this
FAILURE_MEMORY = 900.0  # an address's failures are forgotten this long after its last one
TRACKED_ADDRESSES = 10_000  # addresses the throttle remembers (least recently failed go first)
HTPASSWD_CHECK = 1.0  # seconds between looks at the htpasswd file (one stat; re-read only when changed)
BCRYPT_MAX = 72  # bcrypt reads this many password bytes (htpasswd -B truncates the same way)
_BCRYPT_COST = re.compile(rb"^\$2[abxy]?\$(\d\d)\$")
_HOST = re.compile(r"^(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")


@dataclass(frozen=True, slots=True)
class Identity:
    """Who sent a request. ``role`` is the global role; ``policy`` answers per repository;
    ``granted`` (a bearer token's) caps it: repository -> role the token's actions allow."""

    user: str | None
    role: str
    policy: access.Access | None = None
    granted: Mapping[str, str] | None = None
    host: str | None = None
    """Set for a host credential (``dockyard host add``): it may pull, and call its own host's routes."""

    def role_on(self, repository: str | None) -> str:
        """The role held on ``repository`` (None: the global role, what /admin needs)."""
        if repository is None or self.policy is None:
            return self.role
        return self.policy.role(self.user, repository)

    def allows(self, role: str, repository: str | None = None) -> bool:
        have = self.role_on(repository)
        if repository is not None and self.granted is not None:
            have = access.lower(have, self.granted.get(repository, "none"))
        return RANK[have] >= RANK[role]

    def allows_somewhere(self, role: str) -> bool:
        best = self.policy.best_role(self.user) if self.policy else self.role
        return RANK[best] >= RANK[role]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def too_many(retry_after: float, message: str) -> RegistryError:
    return RegistryError("TOOMANYREQUESTS", message, status=429,
                         headers={"Retry-After": str(max(1, math.ceil(retry_after)))})


class FailureThrottle:
    """Failed logins per client address: the first ``free`` cost nothing, then each
    further one locks the address out for 2, 4, 8 ... ``max_lockout`` seconds. Memory is
    bounded: at most ``capacity`` addresses, the least recently failed forgotten first."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, free: int = FREE_FAILURES,
                 max_lockout: float = MAX_LOCKOUT, memory: float = FAILURE_MEMORY,
                 capacity: int = TRACKED_ADDRESSES):
        self.clock = clock
        self.free = free
        self.max_lockout = max_lockout
        self.memory = memory
        self.capacity = capacity
        self._failures: OrderedDict[str, tuple[int, float, float]] = OrderedDict()  # -> count, last, locked until
        self._lock = threading.Lock()

    def retry_after(self, address: str) -> float:
        """Seconds before a login from ``address`` is checked again; 0 = now."""
        with self._lock:
            entry = self._failures.get(address)
            if entry is None:
                return 0.0
            now = self.clock()
            if now - entry[1] > self.memory:
                del self._failures[address]
                return 0.0
            return max(0.0, entry[2] - now)

    def failed(self, address: str) -> None:
        with self._lock:
            now = self.clock()
            count, last, until = self._failures.pop(address, (0, now, now))
            count = 1 if now - last > self.memory else count + 1
            if count >= self.free:
                until = now + min(2.0 ** (count - self.free + 1), self.max_lockout)
            self._failures[address] = (count, now, until)
            while len(self._failures) > self.capacity:
                self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)

    def __len__(self) -> int:
        return len(self._failures)


def _create_private(path: Path, data: bytes) -> None:
    """Create ``path`` holding ``data``, mode 0600 from its first instant, atomically: it
    appears complete or not at all. The first creator wins (``os.link`` never replaces),
    so worker processes starting together agree on one file."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process was first: keep its file
        except OSError:  # a filesystem without hard links: last writer wins, still complete and 0600
            os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)


class Authenticator:
    def __init__(self, cfg: Config, clock: Callable[[], float] = time.time):
        self.cfg = cfg
        self.clock = clock
        self.enabled = bool(cfg.auth_htpasswd)
        self.policy = cfg.access_policy
        self.anonymous = Identity(None, cfg.effective_anonymous_role, self.policy)
        self.users: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._verified: set[tuple[str, bytes]] = set()  # (user, sha256(password)) known to be right
        self._file_id: tuple | None = None  # (inode, size, mtime) of the htpasswd file last read
        self._checked = 0.0  # time.monotonic() of the last look at the file
        self._generation = 0  # users loaded so far: a check that began before a re-read is not cached
        if self.enabled:
            self._reload(Path(cfg.auth_htpasswd), os.stat(cfg.auth_htpasswd))
        self.secret = self._secret(cfg)
        self.proxies = tuple(ipaddress.ip_network(n, strict=False) for n in cfg.trusted_proxies)
        self.throttle = FailureThrottle()
        self._dummy = self._dummy_hash(self.users.values()) if self.enabled else b""
        self._slots: anyio.CapacityLimiter | None = None  # made on first use, inside the event loop
        self._queued = 0

    def refresh(self) -> None:
        """Re-read the htpasswd file when it changed: a user added, removed or with a new
        password counts without a restart. Looks at the file (one ``stat``) at most once per
        :data:`HTPASSWD_CHECK` seconds; reads it only when its inode, size or mtime changed.
        A file that cannot be read keeps the users already loaded (one warning)."""
        now = time.monotonic()
        if not self.enabled or now - self._checked < HTPASSWD_CHECK:
            return
        self._checked = now
        path = Path(self.cfg.auth_htpasswd)
        try:
            st = path.stat()
            if (st.st_ino, st.st_size, st.st_mtime_ns) != self._file_id:
                self._reload(path, st)
        except OSError as exc:
            if self._file_id is not None:
                log.warning("auth_htpasswd %s cannot be read (%s): keeping the %d users loaded before",
                            path, exc.strerror or exc, len(self.users))
                self._file_id = None  # warn once; read again as soon as it is back

    def _reload(self, path: Path, st: os.stat_result) -> None:
        users = self._load_htpasswd(path)
        with self._lock:
            changed = self._file_id is not None
            self.users = users
            self._file_id = (st.st_ino, st.st_size, st.st_mtime_ns)
            self._verified.clear()  # a removed user or a changed password must not stay valid
            self._generation += 1
            if changed:
                self._dummy = b""  # made again (of the new highest cost) by the next unknown-user check
        if changed:
            log.info("auth_htpasswd %s re-read: %d users", path, len(users))

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
    def _dummy_hash(hashes) -> bytes:
        """What an unknown user's password is checked against: a bcrypt hash of the highest
        cost in the file, so that 'no such user' takes as long as 'wrong password'."""
        costs = [int(m.group(1)) for h in hashes if (m := _BCRYPT_COST.match(h))]
        return bcrypt.hashpw(secrets.token_hex(16).encode(), bcrypt.gensalt(rounds=max(costs, default=12)))

    @staticmethod
    def _secret(cfg: Config) -> bytes:
        if cfg.token_secret:
            return cfg.token_secret.encode()
        path = cfg.data_path / "token-secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            _create_private(path, secrets.token_hex(32).encode())
        secret = path.read_text().strip()
        if len(secret) < 32:
            raise ConfigError(f"{path} holds no usable secret (remove it to have a new one made, or set token_secret)")
        return secret.encode()

    def role_of(self, user: str) -> str:
        return self.policy.global_role(user)

    def identity(self, user: str, granted: Mapping[str, str] | None = None) -> Identity:
        return Identity(user, self.role_of(user), self.policy, granted)

    # ---- credentials -----------------------------------------------------
    async def verify(self, address: str, user: str, password: str) -> bool:
        """Check a password for a client at ``address`` without blocking the event loop.

        Raises TOOMANYREQUESTS (429) while the address is locked out, or when more checks
        wait for a thread than :data:`VERIFY_QUEUE`."""
        wait = self.throttle.retry_after(address)
        if wait > 0:
            raise too_many(wait, "too many failed logins from this address")
        key = (user, hashlib.sha256(password.encode()).digest())
        with self._lock:
            if key in self._verified:
                return True
            generation = self._generation
        if self._slots is None:
            self._slots = anyio.CapacityLimiter(VERIFY_SLOTS)
        if self._queued >= VERIFY_QUEUE:
            raise too_many(1, "too many logins in progress")
        self._queued += 1
        try:
            ok = await anyio.to_thread.run_sync(self._checkpw, user, password, limiter=self._slots)
        finally:
            self._queued -= 1
        if not ok:
            self.throttle.failed(address)
            return False
        self.throttle.succeeded(address)
        with self._lock:
            if len(self._verified) >= 10_000:
                self._verified.clear()
            if generation == self._generation:  # checked against the users loaded now
                self._verified.add(key)
        return True

    def _checkpw(self, user: str, password: str) -> bool:
        """One bcrypt check (in a worker thread), of the same cost whether the user exists or not."""
        hashed = self.users.get(user)
        if hashed is None and not self._dummy:
            self._dummy = self._dummy_hash(self.users.values())
        try:
            ok = bcrypt.checkpw(password.encode()[:BCRYPT_MAX],
                                (hashed or self._dummy).replace(b"$2y$", b"$2b$", 1))
        except ValueError:  # a malformed hash in the file
            ok = False
        return ok and hashed is not None

    def issue_token(self, user: str, scopes: Mapping[str, set[str]] | None = None) -> dict:
        """The token endpoint's answer: token, lifetime and issue time (clients compute expiry from both).

        The token grants, of the repository actions asked for in ``scopes``, those the
        user's role on each repository allows (none at all: a token that only signs in)."""
        ttl = int(self.cfg.token_ttl)
        now = self.clock()
        who = None if user == "anonymous" else user
        grants = [{"type": "repository", "name": name,
                   "actions": access.actions_of_role(self.policy.role(who, name), actions)}
                  for name, actions in (scopes or {}).items()]
        claims = {"sub": user, "exp": int(now) + ttl, "access": grants}
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        sig = _b64(hmac.new(self.secret, body.encode(), hashlib.sha256).digest())
        token = f"{body}.{sig}"
        issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        return {"token": token, "access_token": token, "expires_in": ttl, "issued_at": issued}

    def check_token(self, token: str) -> Identity | None:
        if not token.isascii():  # headers arrive as latin-1: any byte >= 0x80 is no token of ours
            return None
        body, _, sig = token.partition(".")
        expected = _b64(hmac.new(self.secret, body.encode(), hashlib.sha256).digest())
        if not sig or not hmac.compare_digest(sig, expected):
            return None
        try:
            claims = json.loads(_unb64(body))
        except ValueError:
            return None
        if not isinstance(claims, dict) or not isinstance(claims.get("exp"), (int, float)):
            return None
        sub = claims.get("sub")
        if not isinstance(sub, str) or claims["exp"] < self.clock():
            return None
        granted: dict[str, str] = {}
        for grant in claims.get("access") or ():
            if isinstance(grant, dict) and grant.get("type") == "repository" and isinstance(grant.get("name"), str):
                granted[grant["name"]] = access.role_of_actions(a for a in grant.get("actions") or ()
                                                                if isinstance(a, str))
        if sub not in self.users:
            if sub != "anonymous":
                return None
            return Identity(None, self.anonymous.role, self.policy, granted)
        return self.identity(sub, granted)

    def _basic(self, value: str) -> tuple[str, str] | None:
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return user, password

    # ---- the client and the URL it used ----------------------------------
    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.proxies)

    def client_address(self, request: Request) -> str:
        """The direct peer; behind trusted proxies, the nearest X-Forwarded-For hop that is
        not one of them (the hop the outermost trusted proxy saw)."""
        peer = request.client.host if request.client else ""
        if not self.proxies or not self._trusted(peer):
            return peer
        hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",") if h.strip()]
        for hop in reversed(hops):
            if not self._trusted(hop):
                return hop[:64]
        return peer

    def external_url(self, request: Request) -> str:
        """Base URL clients reach this registry at: ``public_url``; else what a trusted proxy
        forwarded; else the scheme and address the connection came in on. Never the Host
        header (an attacker's client chooses it)."""
        if self.cfg.public_url:
            return self.cfg.public_url
        scheme = request.scope.get("scheme", "http")
        host, port = request.scope.get("server") or self.cfg.host_port
        netloc = f"[{host}]" if ":" in host else host
        if (scheme, port) not in (("http", 80), ("https", 443)):
            netloc = f"{netloc}:{port}"
        if self.proxies and request.client and self._trusted(request.client.host):
            proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
            forwarded_host = request.headers.get("x-forwarded-host", "").split(",")[0].strip()
            if proto in ("http", "https"):
                scheme = proto
            if forwarded_host and len(forwarded_host) <= 255 and _HOST.fullmatch(forwarded_host):
                netloc = forwarded_host
        return f"{scheme}://{netloc}"

    # ---- per request -----------------------------------------------------
    async def authenticate(self, request: Request) -> Identity:
        """Who sent the request, from its Authorization header (basic or bearer)."""
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and value.strip().startswith(hosts_service.TOKEN_PREFIX):
            # a host credential is checked with or without auth_htpasswd: a revoked one is refused
            name = await anyio.to_thread.run_sync(hosts_service.host_for_token, request.app.state.registry,
                                                  value.strip())
            if name is None:
                raise self.challenge(request, "unknown or revoked host credential")
            return Identity(f"host:{name}", "pull", host=name)
        if not self.enabled:
            return self.anonymous
        self.refresh()
        if scheme == "basic":
            creds = self._basic(value.strip())
            if creds and await self.verify(self.client_address(request), *creds):
                return self.identity(creds[0])
            raise self.challenge(request, "invalid credentials")
        if scheme == "bearer":
            identity = self.check_token(value.strip())
            if identity is None:
                raise self.challenge(request, "invalid or expired token")
            return identity
        return self.anonymous

    def identify(self, request: Request) -> Identity:
        """The identity :func:`requires` established for this request (anonymous before it)."""
        return getattr(request.state, "identity", None) or self.anonymous

    def challenge(self, request: Request, message: str = "authentication required",
                  scope: str | None = None) -> RegistryError:
        realm = f"{self.external_url(request)}/auth/token"
        value = f'Bearer realm="{realm}",service="dockyard"' + (f',scope="{scope}"' if scope else "")
        return RegistryError("UNAUTHORIZED", message, status=401, headers={"WWW-Authenticate": value})

    def deny(self, request: Request, identity: Identity, role: str, repository: str | None) -> RegistryError:
        """401 with a challenge when not signed in, or signed in with a token that lacks a right
        its holder has (the client fetches a token for this scope); else 403 DENIED."""
        scope = None
        if repository is not None and is_valid_name(repository):  # (never a client's raw bytes in a header)
            scope = f"repository:{repository}:{'pull' if role == 'pull' else 'pull,push'}"
        if identity.user is None or (identity.granted is not None and RANK[identity.role_on(repository)] >= RANK[role]):
            return self.challenge(request, "authentication required" if identity.user is None
                                  else "the token does not grant this repository", scope)
        where = f" on {repository}" if repository is not None else ""
        return RegistryError("DENIED", f"requires the {role} role{where}", {"user": identity.user}, status=403)


DRAIN_LIMIT = 64 * 1024 * 1024


async def _drain(request: Request) -> None:
    """Read and drop an unread request body before an error answer, so the
    connection stays usable for the client's next request."""
    if request.method not in ("POST", "PUT", "PATCH") or getattr(request, "_stream_consumed", True):
        return
    seen = 0
    try:
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > DRAIN_LIMIT:
                return
    except ClientDisconnect:  # the client is gone: nothing left to keep usable
        return


def requires(role: str, where: str = "global"):
    """The single permission check: ``@requires("push", "repository")`` on a route handler.

    ``where``: ``"repository"`` = the role on the route's ``{name}``; ``"global"`` = the global
    role (administration); ``"somewhere"`` = the role on at least one repository (the catalog,
    which then lists only what the caller may pull); ``"ping"`` (``GET /v2/``) is ``"somewhere"``
    but always challenges a request without credentials when authentication is on, as
    distribution does: clients holding credentials learn there that they should send them."""
    assert where in ("global", "repository", "somewhere", "ping")

    def wrap(handler: Callable[[Request], Awaitable[Response]]):
        @functools.wraps(handler)
        async def inner(request: Request) -> Response:
            auth: Authenticator = request.app.state.auth
            try:
                identity = await auth.authenticate(request)
                repository = request.path_params.get("name") if where == "repository" else None
                if where == "ping" and auth.enabled and "authorization" not in request.headers:
                    raise auth.challenge(request)
                allowed = (identity.allows_somewhere(role) if where in ("somewhere", "ping")
                           else identity.allows(role, repository))
                if not allowed:
                    raise auth.deny(request, identity, role, repository)
                request.state.identity = identity
                return await handler(request)
            except RegistryError:
                await _drain(request)
                raise

        inner.required_role = role  # type: ignore[attr-defined]
        inner.required_where = where  # type: ignore[attr-defined]
        return inner

    return wrap


async def token_endpoint(request: Request) -> Response:
    """``GET /auth/token``: basic credentials in, bearer token out (docker token protocol)."""
    auth: Authenticator = request.app.state.auth
    scopes = access.parse_scopes(request.query_params.getlist("scope"))
    if not auth.enabled:
        return JSONResponse(auth.issue_token("anonymous", scopes))
    auth.refresh()
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    creds = auth._basic(value.strip()) if scheme.lower() == "basic" else None
    if not creds or not await auth.verify(auth.client_address(request), *creds):
        if auth.anonymous.allows_somewhere("pull") and not header:
            return JSONResponse(auth.issue_token("anonymous", scopes))
        raise RegistryError("UNAUTHORIZED", "invalid credentials", status=401,
                            headers={"WWW-Authenticate": 'Basic realm="dockyard"'})
    return JSONResponse(auth.issue_token(creds[0], scopes))
