"""Prefetch: bring an image or a blob into this replica's cache before anyone pulls it.

A target is queued in the durable queue (:class:`dockyard.meta.prefetchqueue.PrefetchQueue`,
in the cache's index file, so it survives restarts and kills) and worked in the background by
:class:`PrefetchJob` with at most ``cache_prefetch_workers`` blobs in flight. An image reference
(``repo:tag`` or ``repo@digest``) brings its config and layers; an index brings those of its
children for the configured platforms (``cache_prefetch_platforms``).
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from dockyard.cache.blobcache import BlobCache
from dockyard.cache.maintenance import alive
from dockyard.errors import RegistryError
from dockyard.meta.blobs import BlobStore
from dockyard.meta.db import Database
from dockyard.meta.manifests import ManifestStore
from dockyard.meta.prefetchqueue import PrefetchQueue
from dockyard.oci.digest import Digest, InvalidDigest
from dockyard.oci.manifest import ManifestInvalid, parse
from dockyard.oci.references import InvalidReference, parse_reference

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 5


class PrefetchFailed(Exception):
    """A target that cannot be prefetched now (unknown, or the backend failed)."""


def canonical_target(text: str) -> str:
    """A digest or an image reference (no host), as queued; a 400 for anything else."""
    text = text.strip()
    if _is_digest(text):
        return str(Digest.parse(text))
    try:
        ref = parse_reference(text)
    except InvalidReference as exc:
        raise RegistryError("NAME_INVALID", "a prefetch target is a digest, REPO:TAG or REPO@DIGEST",
                            {"target": text[:200], "reason": str(exc)}) from exc
    if ref.host or (ref.tag is None and ref.digest is None):
        raise RegistryError("NAME_INVALID", "a prefetch target is a digest, REPO:TAG or REPO@DIGEST (no host)",
                            {"target": text[:200]})
    return str(ref)


def _is_digest(target: str) -> bool:
    try:
        Digest.parse(target)
    except InvalidDigest:
        return False
    return True


def enqueue(cache: BlobCache, target: str, pin: bool, now: float) -> dict:
    item, new = PrefetchQueue(cache.index).put(canonical_target(target), pin, now)
    cache.wakeup.set()
    return {"queued": asdict(item), "new": new}


def _platform_matches(platform: dict | None, wanted: tuple[str, ...]) -> bool:
    if not platform:
        return False
    for spec in wanted:
        parts = spec.split("/")
        if platform.get("os") == parts[0] and platform.get("architecture") == (parts[1] if len(parts) > 1 else None) \
                and (len(parts) < 3 or platform.get("variant") == parts[2]):
            return True
    return False


def resolve(db: Database, target: str, platforms: tuple[str, ...]) -> list[tuple[str, int]]:
    """(digest, size) of every blob ``target`` brings."""
    if _is_digest(target):
        with db.read() as conn:
            blob = BlobStore(conn).get_linked_anywhere(target)
        if blob is None:
            raise PrefetchFailed(f"blob {target} unknown to the registry")
        return [(blob.digest, blob.size)]
    ref = parse_reference(target)
    with db.read() as conn:
        store = ManifestStore(conn)
        top = store.lookup(ref.repository, tag=ref.tag) if ref.digest is None else \
            store.lookup(ref.repository, digest=ref.digest)
        if top is None:
            raise PrefetchFailed(f"image {target} unknown to the registry")
        todo, out = [top], {}
        while todo:
            manifest = todo.pop()
            try:
                parsed = parse(manifest.payload or b"", manifest.media_type)
            except ManifestInvalid as exc:
                raise PrefetchFailed(f"{target}: {manifest.digest} does not parse: {exc}") from exc
            out.update((d.digest, d.size) for d in parsed.blobs)
            if manifest is top:  # an index: its children for the wanted platforms (one level)
                for child in parsed.children:
                    if _platform_matches(child.platform, platforms):
                        found = store.get(manifest.repository_id, child.digest, payload=True)
                        if found is not None:
                            todo.append(found)
    return sorted(out.items())


@dataclass
class PrefetchReport:
    """A prefetch run's result, of the one job shape (``dockyard.report.RunResult``)."""
    items_done: int = 0
    items_failed: int = 0
    blobs_cached: int = 0
    bytes_cached: int = 0
    duration: float = 0.0
    job = "cache-prefetch"
    dry_run = False

    def as_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        return (f"prefetched {self.items_done} targets ({self.items_failed} failed): {self.blobs_cached} blobs, "
                f"{self.bytes_cached} bytes cached in {self.duration:.2f}s")


class PrefetchJob:
    """One run works every due item of the queue (``run()``, for a Runner or the CLI)."""

    job = "cache-prefetch"

    def __init__(self, cache: BlobCache, db: Database, *, workers: int = 4,
                 platforms: tuple[str, ...] = ("linux/amd64",), max_items: int = 1000):
        self.cache = cache
        self.db = db
        self.queue = PrefetchQueue(cache.index)
        self.workers = max(1, workers)
        self.platforms = platforms
        self.max_items = max_items

    def run(self) -> PrefetchReport:
        report = PrefetchReport()
        started = time.monotonic()
        pid = os.getpid()
        with ThreadPoolExecutor(self.workers, thread_name_prefix="dockyard-prefetch") as pool:
            while report.items_done + report.items_failed < self.max_items:
                dead = [p for p in self.queue.owners() if p != pid and not alive(p)]
                items = self.queue.claim(pid, self.cache.now(), self.workers, dead)
                if not items:
                    break
                for item, outcome in zip(items, pool.map(self._work, items)):
                    if isinstance(outcome, Exception):
                        report.items_failed += 1
                        self._failed(item, outcome)
                    else:
                        report.items_done += 1
                        report.blobs_cached += outcome[0]
                        report.bytes_cached += outcome[1]
                        self.queue.done(item.id)
                        log.info("cache prefetch: %s done (%d blobs, %d bytes cached)", item.target, *outcome)
        self.cache.metrics.set("dockyard_cache_prefetch_queue", self.queue.length())
        report.duration = time.monotonic() - started
        return report

    def _work(self, item):
        try:
            blobs = resolve(self.db, item.target, self.platforms)
            cached = size = 0
            for digest, blob_size in blobs:  # the pool bounds how many items fill at once
                if not self.cache.fill(digest, blob_size):
                    raise PrefetchFailed(f"{digest} could not be cached (no room, or it failed verification)")
                if item.pin:
                    self.cache.index.set_pinned(digest, True)
                cached += 1
                size += blob_size
            return cached, size
        except Exception as exc:  # recorded on the item, retried later (never lost)
            return exc

    def _failed(self, item, exc: Exception) -> None:
        if item.attempts + 1 >= MAX_ATTEMPTS:
            log.warning("cache prefetch: %s dropped after %d attempts: %s", item.target, item.attempts + 1, exc)
            self.queue.done(item.id)
            return
        delay = min(3600.0, 10.0 * 2 ** item.attempts)
        log.warning("cache prefetch: %s failed (%s); retry in %.0f s", item.target, exc, delay)
        self.queue.failed(item.id, str(exc), self.cache.now() + delay)
