"""The pull-through mirror: repositories under a configured prefix mirror an upstream registry.

- A manifest not here (or a tag past ``mirror_manifest_ttl``) is fetched, verified and parsed;
  the client gets it at once. A background completion fetches what it references, then
  stores it by the push path (``registry.manifests.put``). With ``mirror_prefetch_blobs`` the
  blobs of an image manifest a client asked for are fetched at once, ``mirror_prefetch_workers``
  at a time for the whole process (the prefetch), so that the client's blob requests find them
  stored or in flight; an index's children, and everything without the prefetch, are fetched
  after the client went idle (it streams them itself meanwhile).
- A blob not here streams to the client while the push path stores it (``stream.py``): one
  pass, each byte hashed once and written once. One fetch per digest at a time on a host (in
  this process, and across the workers of ``serve``: ``claims.py``): a request for a blob in
  flight joins that fetch (waits for it to end, then serves the stored
  blob; if it failed, fetches it itself, so the client gets the upstream's error).
- A tag is revalidated with a HEAD after its TTL; digests never expire. When the upstream
  cannot answer well, what is here is served and marked stale.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from dockyard import faults
from dockyard.errors import RegistryError, Unavailable, manifest_unknown
from dockyard.meta.blobs import BlobStore
from dockyard.meta.manifests import Manifest
from dockyard.mirror import claims, stream
from dockyard.mirror.upstream import (Upstream, UpstreamError, UpstreamNotFound, UpstreamState, UpstreamUnreachable,
                                      verified)
from dockyard.oci.manifest import MAX_MANIFEST_BYTES, ParsedManifest
from dockyard.registry import blobs, manifests
from dockyard.registry.context import Registry
from dockyard.registry.pulls import Throttled
from dockyard.validate import check_digest, check_reference, is_digest_reference

log = logging.getLogger(__name__)
_stale = Throttled(log, 60.0)
CLIENT_IDLE = 1.0  # s without a client blob fetch of the repository before a completion fetches itself
CLIENT_PATIENCE = 600.0  # the most a completion defers to clients per blob
FETCH_WAIT = 600.0  # the most one wait for another request's fetch of a blob lasts (a hung one holds no one forever)
JOIN_WAIT = 600.0  # the most a request waits in all for fetches of one blob by others, then a 503


@dataclass
class Opened:
    size: int | None   # the Content-Length the upstream announced (None: not announced)


@dataclass
class Route:
    name: str          # the [mirrors.NAME]
    prefix: str
    upstream: Upstream
    remote: str        # the repository's name upstream (the prefix taken off)


class Mirror:
    def __init__(self, reg: Registry):
        self.reg = reg
        self.upstreams = {n: (m["prefix"], Upstream(n, m["url"], m["username"], m["password"]))
                          for n, m in reg.config.mirrors.items()}
        self.states = {n: UpstreamState() for n in self.upstreams}
        self._checked: dict[tuple[str, str], float] = {}
        self._fetching: dict[str, threading.Event] = {}
        self._completing: set[tuple[str, str]] = set()
        self._client_active: dict[str, float] = {}  # repository -> last client blob fetch (monotonic)
        self._client_streams: dict[str, int] = {}  # repository -> blobs streaming to clients now
        self._lock = threading.Lock()
        self._claims = claims.HostClaims(Path(reg.config.data_dir) / "mirror-fetching")
        self._host_claims: dict[str, int] = {}  # digest -> this process's claim (claims.HostClaims)
        self._tees: dict[str, stream.Tee] = {}  # digest -> what its prefetch in flight has read
        workers = reg.config.mirror_prefetch_workers if reg.config.mirror_prefetch_blobs else 0
        self._prefetch = (ThreadPoolExecutor(workers, thread_name_prefix="mirror-prefetch")
                          if workers > 0 else None)
        self.on_stored = None  # called after each stored image with {"repo@digest"} (the bound)

    @property
    def prefixes(self) -> dict[str, str]:
        return {n: prefix for n, (prefix, _) in self.upstreams.items()}

    def fetch_blob(self, name: str, digest: str) -> None:
        self.ensure_blob(self.route(name), name, str(check_digest(digest)))

    def close(self) -> None:
        if self._prefetch is not None:
            self._prefetch.shutdown(wait=False, cancel_futures=True)
        for _, up in self.upstreams.values():
            up.close()

    def route(self, name: str) -> Route | None:
        for n, (prefix, up) in self.upstreams.items():
            if name.startswith(prefix) and len(name) > len(prefix):
                return Route(n, prefix, up, name[len(prefix):])
        return None

    def refuse_push(self, name: str) -> None:
        route = self.route(name)
        if route is not None:
            raise RegistryError("DENIED", "repository mirrors an upstream registry; pushes are refused",
                                {"repository": name, "mirror": route.name})

    # ---- bookkeeping of upstream health and metrics -----------------------------
    def _ok(self, route: Route, kind: str, nbytes: int) -> None:
        s = self.states[route.name]
        s.reachable, s.last_contact = True, self.reg.now()
        self.reg.metrics.inc("dockyard_mirror_fetches_total", upstream=route.name, kind=kind)
        self.reg.metrics.inc("dockyard_mirror_fetched_bytes_total", nbytes, upstream=route.name, kind=kind)

    def failed(self, route: Route, kind: str, exc: Exception) -> None:
        s = self.states[route.name]
        if isinstance(exc, UpstreamNotFound):
            return
        if isinstance(exc, UpstreamUnreachable):
            s.reachable = False
        s.last_error = str(exc)[:500]
        self.reg.metrics.inc("dockyard_mirror_failures_total", upstream=route.name, kind=kind)

    # ---- manifests -----------------------------------------------------------------
    def manifest(self, name: str, reference: str, accept: list[str] | None) -> tuple[Manifest, bool]:
        """The manifest to serve and whether it is stale (upstream unreachable)."""
        route = self.route(name)
        ref = check_reference(reference)
        by_digest = is_digest_reference(ref)
        local = _local(self.reg, name, ref, accept)
        if local is not None and (by_digest or self._fresh(name, ref)):
            return local, False
        try:
            if local is not None:  # a tag past its TTL: is it still the same image upstream?
                tagged = _local(self.reg, name, ref, None)
                now_digest = route.upstream.head_manifest(route.remote, ref)
                self._ok(route, "revalidate", 0)
                if tagged is not None and now_digest == tagged.digest:
                    self._checked[(name, ref)] = time.monotonic()
                    return local, False
            fetched = route.upstream.get_manifest(route.remote, ref, MAX_MANIFEST_BYTES)
            digest, parsed = self._verified(route, ref, fetched)
        except UpstreamError as exc:
            self.failed(route, "manifest", exc)
            if isinstance(exc, UpstreamNotFound):
                raise manifest_unknown(reference) from exc
            if local is not None:  # unreachable, refusing or lying: what is here is served, marked
                _stale.warn("mirror %s: serving %s:%s as cached (%s)", route.name, name, ref, exc)
                return local, True
            raise
        self._ok(route, "manifest", len(fetched.payload))
        self.complete_later(route, name, ref, fetched.payload, fetched.media_type or parsed.media_type, parsed)
        return Manifest(0, 0, digest, fetched.media_type or parsed.media_type, len(fetched.payload), "active",
                        parsed.artifact_type, parsed.subject.digest if parsed.subject else None,
                        fetched.payload), False

    def _fresh(self, name: str, tag: str) -> bool:
        at = self._checked.get((name, tag))
        return at is not None and time.monotonic() - at < self.reg.config.mirror_manifest_ttl

    def _verified(self, route: Route, ref: str, fetched) -> tuple[str, ParsedManifest]:
        try:
            return verified(route.name, route.remote, ref, fetched)
        except UpstreamError as exc:
            log.warning("%s", exc)
            exc.logged = True
            raise

    def complete_later(self, route: Route, name: str, ref: str, payload: bytes, media_type: str,
                       parsed: ParsedManifest) -> None:
        key = (name, ref)
        with self._lock:
            if key in self._completing:
                return
            self._completing.add(key)

        self.client_fetching(name)  # the client has the manifest just now: its blob requests come next
        checked = time.monotonic()

        def work() -> None:
            try:
                self.complete(route, name, ref, payload, media_type, parsed, checked,
                              prefetch=self._prefetch is not None)
            except Exception as exc:  # recorded on the upstream's state; the next pull tries again
                self.failed(route, "complete", exc)
                (log.debug if getattr(exc, "logged", False) else log.warning)(
                    "mirror %s: could not store %s:%s: %s", route.name, name, ref, exc)
            finally:
                with self._lock:
                    self._completing.discard(key)

        threading.Thread(target=work, name=f"mirror-{name}", daemon=True).start()

    def complete(self, route: Route, name: str, ref: str, payload: bytes, media_type: str,
                 parsed: ParsedManifest, checked: float | None = None, prefetch: bool = False) -> None:
        """Fetch what the manifest references, then store it (tag or digest) by the push path.
        The tag counts as checked from ``checked``, when the manifest was fetched. ``prefetch``:
        its blobs are fetched at once by the prefetch workers (else one by one, clients first)."""
        checked = time.monotonic() if checked is None else checked
        for child in parsed.children:
            if _local(self.reg, name, child.digest, None) is None:
                fetched = route.upstream.get_manifest(route.remote, child.digest, MAX_MANIFEST_BYTES)
                try:
                    _, child_parsed = self._verified(route, child.digest, fetched)
                except UpstreamError as exc:
                    self.failed(route, "manifest", exc)
                    raise
                self._ok(route, "manifest", len(fetched.payload))
                self.complete(route, name, child.digest, fetched.payload,
                              fetched.media_type or child_parsed.media_type, child_parsed)
        if prefetch and parsed.blobs:
            self._prefetched(route, name, [b.digest for b in parsed.blobs])
        for blob in parsed.blobs:
            if not self._here(name, blob.digest):
                self._clients_done(name, blob.digest)
                self.ensure_blob(route, name, blob.digest)
        stored = manifests.put(self.reg, name, ref, payload, media_type, actor=f"mirror:{route.name}")
        if not is_digest_reference(ref):
            self._checked[(name, ref)] = max(checked, self._checked.get((name, ref), 0.0))
        if self.on_stored is not None:
            self.on_stored({f"{name}@{stored.manifest.digest}"})

    # ---- blobs -----------------------------------------------------------------------
    def _prefetched(self, route: Route, name: str, digests: list[str]) -> None:
        """Fetch ``digests`` on the prefetch workers, in order, and wait for them all; then
        raise the first failure (nothing of a failed blob was stored; the completion ends and
        a client's request fetches the blob itself)."""
        jobs = [self._prefetch.submit(self.ensure_blob, route, name, d, True) for d in dict.fromkeys(digests)]
        wait(jobs)
        failed = [job.exception() for job in jobs if job.exception() is not None]  # recorded by store/_open
        if failed:
            raise failed[0]

    def _clients_done(self, name: str, digest: str) -> None:
        """Let clients fetch first: they stream while the blob is stored, where a blob this
        completion fetched is theirs only once stored. Waits while a client of ``name`` has
        fetched a blob within ``CLIENT_IDLE`` (or the blob is here), at most ``CLIENT_PATIENCE``."""
        deadline = time.monotonic() + CLIENT_PATIENCE
        while time.monotonic() < deadline:
            with self._lock:
                if digest in self._fetching:
                    return  # ensure_blob waits for that fetch
                idle = time.monotonic() - self._client_active.get(name, 0.0)
                streaming = self._client_streams.get(name, 0)
            if not streaming and idle >= CLIENT_IDLE:
                return
            time.sleep(0.05)

    def client_fetching(self, name: str, streams: int = 0) -> None:
        """A client of ``name`` is active now; ``streams`` +1/-1 when a stream-through starts/ends."""
        with self._lock:
            self._client_active[name] = time.monotonic()
            count = self._client_streams.get(name, 0) + streams
            if count > 0:
                self._client_streams[name] = count
            else:
                self._client_streams.pop(name, None)
            if len(self._client_active) > 10_000:
                self._client_active.clear()

    def _begin(self, digest: str) -> threading.Event | None:
        """This thread's claim to fetch ``digest`` (None: another fetch runs, in this process or
        another worker on this host; it was waited for)."""
        with self._lock:
            other = self._fetching.get(digest)
            if other is None:
                mine = self._fetching[digest] = threading.Event()
        if other is not None:
            other.wait(FETCH_WAIT)
            return None
        try:
            fd = self._claims.take(digest)
            if fd is not None:
                with self._lock:
                    self._host_claims[digest] = fd
                return mine
            self._claims.wait(digest, FETCH_WAIT)  # another worker fetches it (this process's fetchers wait here too)
        except OSError as exc:  # no claims directory: fetched in this process regardless
            log.debug("mirror: no host claim on %s: %s", digest, exc)
            return mine
        self._end(digest)
        return None

    def _end(self, digest: str) -> None:
        with self._lock:
            ev = self._fetching.pop(digest, None)
            fd = self._host_claims.pop(digest, None)
            self._tees.pop(digest, None)
        try:
            if fd is not None:
                self._claims.release(digest, fd)
        except OSError as exc:  # the lock goes with the descriptor; a file left is taken next time
            log.debug("mirror: releasing the host claim on %s: %s", digest, exc)
        finally:
            if ev is not None:
                ev.set()

    def _here(self, name: str, digest: str) -> bool:
        try:
            blobs.stat(self.reg, name, digest)
            return True
        except RegistryError as exc:
            if exc.code not in ("BLOB_UNKNOWN", "NAME_UNKNOWN"):
                raise
        with self.reg.db.read() as conn:  # held for another repository? (a read first: mostly not)
            if BlobStore(conn).get_linked_anywhere(digest) is None:
                return False
        return blobs.mount(self.reg, name, digest, None) is not None

    def ensure_blob(self, route: Route, name: str, digest: str, tee: bool = False) -> None:
        """Make the blob present in ``name`` (fetched and verified if it is not). ``tee``: a
        request for it meanwhile follows this fetch as it reads (``stream.teed``)."""
        while True:
            if self._here(name, digest):
                return
            if self._begin(digest) is not None:
                break
        try:
            if self._here(name, digest):
                return
            faults.point("mirror.blob_claimed")  # a request for the blob now joins this fetch
            size, chunks = self._open(route, digest)
            if tee and size is not None and size <= stream.TEE_MAX:
                teeing = stream.Tee(size)
                with self._lock:
                    self._tees[digest] = teeing
                stream.teed(self, route, name, digest, size, chunks, teeing)
            else:
                stream.store(self, route, name, digest, size, chunks)
        finally:
            self._end(digest)

    def _open(self, route: Route, digest: str) -> tuple[int | None, Iterator[bytes]]:
        try:
            return route.upstream.open_blob(route.remote, digest)
        except UpstreamError as exc:
            self.failed(route, "blob", exc)
            if isinstance(exc, UpstreamNotFound):
                raise RegistryError("BLOB_UNKNOWN", "blob unknown to registry and upstream",
                                    {"digest": digest}) from exc
            raise

    def open_blob(self, name: str, digest: str, client: stream.Client) -> Opened | None:
        """Start streaming the blob from the upstream to ``client`` while it is stored
        (``stream.through``); None if it is here now (another request or the prefetch fetched
        it meanwhile: a fetch in flight is joined, waited for). The caller found it missing
        just now, so the claim comes first, then one check; a joined fetch that failed is
        followed by this request's own (the client gets the upstream's error, or the blob)."""
        route = self.route(name)
        d = str(check_digest(digest))
        self.client_fetching(name)
        deadline = time.monotonic() + JOIN_WAIT
        while True:
            with self._lock:
                tee = self._tees.get(d)
            if tee is not None and not tee.failed:  # a prefetch in flight: follow it as it reads
                threading.Thread(target=tee.follow, args=(client,), name=f"mirror-join-{d[7:19]}",
                                 daemon=True).start()
                return Opened(tee.size)
            if self._begin(d) is not None:
                break
            if self._here(name, d):
                return None
            if time.monotonic() >= deadline:  # the fetch it joined neither ended nor failed (hung): no wait forever
                raise Unavailable(f"blob {d} is still being fetched from the upstream by another request; "
                                  "retry later", 30)
        try:
            if self._here(name, d):
                self._end(d)
                return None
            size, chunks = self._open(route, d)
        except BaseException:
            self._end(d)
            raise
        self.client_fetching(name, +1)  # until the store ends (stream.through)
        stream.through(self, route, name, d, size, chunks, client)
        return Opened(size)


def _local(reg: Registry, name: str, ref: str, accept: list[str] | None) -> Manifest | None:
    try:
        return manifests.get(reg, name, ref, accept)
    except RegistryError as exc:
        if exc.code in ("MANIFEST_UNKNOWN", "NAME_UNKNOWN"):
            return None
        raise
