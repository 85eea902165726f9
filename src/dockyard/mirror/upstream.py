"""The HTTP client of one upstream registry (the mirror's only HTTP code below ``api/``).

Authentication follows what the upstream asks for: ``WWW-Authenticate: Basic`` gets the
configured username and password; ``WWW-Authenticate: Bearer realm=...,service=...,scope=...``
gets a token from the realm (with basic credentials if configured, anonymous otherwise),
cached per scope until it expires, and the request is sent again with it.

Errors: :class:`UpstreamUnreachable` (connection failed, 5xx, timeout: stale content may be
served), :class:`UpstreamNotFound` (404), :class:`UpstreamError` (anything else the upstream
got wrong: a refused login, bytes that do not match their digest, a malformed manifest).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Iterator

import httpcore
import httpx

from dockyard.errors import Unavailable
from dockyard.oci import mediatypes as mt
from dockyard.oci.digest import compute
from dockyard.oci.manifest import ManifestInvalid, ParsedManifest, parse

ACCEPT = ", ".join(sorted(mt.MANIFESTS))
READ = 1024 * 1024  # bytes asked of the socket per read (httpcore asks 64 KiB)
_PARAM = re.compile(r'(\w+)="([^"]*)"')


class UpstreamError(Unavailable):
    """The upstream failed or sent something unusable; nothing of it is cached. ``logged``:
    its one warning line has been written (a background completion adds none)."""

    logged = False

    def __init__(self, upstream: str, message: str):
        super().__init__(f"upstream {upstream}: {message}", retry_after=30, detail={"upstream": upstream})


class UpstreamUnreachable(UpstreamError):
    pass


class UpstreamNotFound(UpstreamError):
    pass


@dataclass
class UpstreamState:
    """What this process knows of an upstream's health."""

    reachable: bool | None = None
    last_error: str = ""
    last_contact: float = 0.0


@dataclass
class Fetched:
    """A manifest as the upstream sent it."""

    payload: bytes
    media_type: str
    digest_header: str | None


class Upstream:
    def __init__(self, name: str, url: str, username: str = "", password: str = "", timeout: float = 30.0):
        self.name, self.url = name, url.rstrip("/")
        self._basic = (username, password) if username else None
        self._client = httpx.Client(timeout=httpx.Timeout(timeout, connect=5.0), follow_redirects=True,
                                    transport=_transport())
        self._tokens: dict[str, tuple[str, float]] = {}
        self._basic_header: str | None = None  # sent up front once the upstream asked for basic
        self._lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    # ---- the requests the mirror makes ---------------------------------------------
    def ping(self) -> None:
        self._send("GET", "/v2/", scope="")

    def head_manifest(self, repo: str, reference: str) -> str | None:
        """The digest the upstream's tag points at now (None if it does not say)."""
        r = self._send("HEAD", f"/v2/{repo}/manifests/{reference}", scope=_pull(repo), accept=ACCEPT)
        return r.headers.get("docker-content-digest")

    def get_manifest(self, repo: str, reference: str, limit: int) -> Fetched:
        r = self._send("GET", f"/v2/{repo}/manifests/{reference}", scope=_pull(repo), accept=ACCEPT, stream=True)
        try:
            body = bytearray()
            for chunk in r.iter_bytes():
                body += chunk
                if len(body) > limit:
                    raise UpstreamError(self.name, f"manifest {repo}:{reference} exceeds {limit} bytes")
        except httpx.HTTPError as exc:
            raise UpstreamError(self.name, f"manifest {repo}:{reference} truncated ({exc})") from exc
        finally:
            r.close()
        media_type = r.headers.get("content-type", "").split(";")[0].strip()
        return Fetched(bytes(body), media_type, r.headers.get("docker-content-digest"))

    def open_blob(self, repo: str, digest: str) -> tuple[int | None, Iterator[bytes]]:
        """``(size or None, chunks)`` of a blob; the chunks raise UpstreamError when the body
        breaks off, and close the response when done."""
        r = self._send("GET", f"/v2/{repo}/blobs/{digest}", scope=_pull(repo), stream=True)
        length = r.headers.get("content-length")
        size = int(length) if length and length.isdigit() else None

        def chunks() -> Iterator[bytes]:
            try:
                yield from r.iter_bytes()  # as read: no copy into chunks of a fixed size
            except httpx.HTTPError as exc:
                raise UpstreamError(self.name, f"blob {digest} broke off ({exc})") from exc
            finally:
                r.close()

        return size, chunks()

    # ---- transport and the two auth flows ----------------------------------------
    def _send(self, method: str, path: str, *, scope: str, accept: str | None = None,
              stream: bool = False) -> httpx.Response:
        headers = {"Accept": accept} if accept else {}
        auth = self._cached(scope)
        try:
            for attempt in range(2):
                if auth:
                    headers["Authorization"] = auth
                req = self._client.build_request(method, self.url + path, headers=headers)
                r = self._client.send(req, stream=stream)
                if r.status_code != 401 or attempt:
                    break
                r.close()
                auth = self._answer(r.headers.get("www-authenticate", ""), scope)
                if auth is None:
                    break
        except httpx.HTTPError as exc:
            raise UpstreamUnreachable(self.name, f"{method} {path}: {exc.__class__.__name__} {exc}") from exc
        if r.status_code < 300:
            return r
        r.close()
        if r.status_code == 404:
            raise UpstreamNotFound(self.name, f"{method} {path}: not found")
        if r.status_code >= 500 or r.status_code == 429:
            raise UpstreamUnreachable(self.name, f"{method} {path}: HTTP {r.status_code}")
        raise UpstreamError(self.name, f"{method} {path}: HTTP {r.status_code}")

    def _cached(self, scope: str) -> str | None:
        if self._basic_header:
            return self._basic_header
        with self._lock:
            token = self._tokens.get(scope)
        if token and token[1] > time.monotonic():
            return token[0]
        return None

    def _answer(self, challenge: str, scope: str) -> str | None:
        """The Authorization header that answers ``challenge`` (None: nothing to answer with)."""
        kind = challenge.split(" ", 1)[0].lower()
        if kind == "basic":
            if not self._basic:
                return None
            flow = httpx.BasicAuth(*self._basic).auth_flow(httpx.Request("GET", self.url))
            self._basic_header = next(flow).headers["Authorization"]
            return self._basic_header
        if kind != "bearer":
            return None
        params = dict(_PARAM.findall(challenge))
        realm = params.get("realm")
        if not realm:
            raise UpstreamError(self.name, f"bearer challenge without realm: {challenge[:200]}")
        query = {k: v for k, v in (("service", params.get("service")),
                                   ("scope", params.get("scope") or scope)) if v}
        try:
            r = self._client.get(realm, params=query, auth=httpx.BasicAuth(*self._basic) if self._basic else None)
        except httpx.HTTPError as exc:
            raise UpstreamUnreachable(self.name, f"token realm {realm}: {exc}") from exc
        if r.status_code != 200:
            raise UpstreamError(self.name, f"token realm {realm} refused the credentials (HTTP {r.status_code})")
        try:
            doc = r.json()
            token = doc.get("token") or doc["access_token"]
            ttl = float(doc.get("expires_in", 60))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UpstreamError(self.name, f"token realm {realm} sent no token") from exc
        header = f"Bearer {token}"
        with self._lock:
            self._tokens[scope] = (header, time.monotonic() + max(ttl - 10, ttl / 2))
        return header


class _BigReads(httpcore.NetworkStream):
    """A connection read :data:`READ` bytes at a time: a blob arrives in a few large chunks
    (as much as the socket holds) instead of many of 64 KiB, each of which costs the
    parser, the reader, the hasher and the client's stream a round of Python."""

    def __init__(self, inner: httpcore.NetworkStream):
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max(max_bytes, READ), timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _BigReads(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str):
        return self._inner.get_extra_info(info)


class _BigReadsBackend(httpcore.SyncBackend):
    def connect_tcp(self, *args, **kwargs) -> httpcore.NetworkStream:
        return _BigReads(super().connect_tcp(*args, **kwargs))


def _transport() -> httpx.HTTPTransport:
    """httpx's transport (keep-alive pool), its connections reading large. httpx takes no
    network backend, so it is set on its pool; where that is not there, reads stay 64 KiB."""
    transport = httpx.HTTPTransport()
    pool = getattr(transport, "_pool", None)
    if pool is not None and isinstance(getattr(pool, "_network_backend", None), httpcore.SyncBackend):
        pool._network_backend = _BigReadsBackend()
    return transport


def verified(upstream: str, remote: str, ref: str, fetched: Fetched) -> tuple[str, ParsedManifest]:
    """``(digest, parsed)`` of a fetched manifest: its bytes hash to the digest reference (or,
    by tag, to the ``Docker-Content-Digest`` the upstream sent) and it parses; else UpstreamError."""
    by_digest = ref.startswith(("sha256:", "sha512:"))
    algorithm = ref.split(":", 1)[0] if by_digest else "sha256"
    digest = str(compute(fetched.payload, algorithm))
    if by_digest and digest != ref:
        raise UpstreamError(upstream, f"manifest {ref} does not match its digest (got {digest})")
    claimed = fetched.digest_header
    if claimed and claimed.split(":", 1)[0] == algorithm and claimed != digest:
        raise UpstreamError(upstream, f"manifest {remote}:{ref} does not match the digest it was sent with")
    try:
        return digest, parse(fetched.payload, fetched.media_type or None)
    except ManifestInvalid as exc:
        raise UpstreamError(upstream, f"manifest {remote}:{ref} is malformed: {exc}") from exc


def _pull(repo: str) -> str:
    return f"repository:{repo}:pull"
