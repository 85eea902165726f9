"""The per-replica read-through blob cache: a layer in front of the storage driver's read path.

A read of a cached blob is served from its file (Range requests too), under a read lease so it
is never evicted meanwhile. A miss of a whole blob streams it from the backend to the client
and into the cache at the same time: bytes are reserved in the index first (evicting least
recently used entries, through :func:`dockyard.lru.victims`, when they would not fit; serving
without caching when even that cannot make room), written to an incomplete file under
``tmp/``, and that file becomes visible only after its size and digest are verified::

    write tmp/<hex>.<pid>.<n> -> fsync -> verify size + digest -> rename to blobs/<alg>/<hex>
    -> fsync the directory -> mark the entry ready in the index

A process killed anywhere in there leaves a ``filling`` entry (never served) that ``clean``
removes with its files. A miss of a byte range is passed through to the backend.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from dockyard import faults
from dockyard.cache.evict import Unlinker
from dockyard.cache.streams import Stream as _Stream, close as _close
from dockyard.lru import Entry, victims, watermarks
from dockyard.meta.cacheindex import READY, CacheIndex, CacheIndexError
from dockyard.metrics import Metrics
from dockyard.oci.digest import Digest

log = logging.getLogger(__name__)
CHUNK = 1024 * 1024
Backend = Callable[[str, int, "int | None"], Iterator[bytes]]  # (digest, offset, length) -> bytes from storage
_seq = itertools.count()
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}")


COUNTS = ("hits", "misses", "cache_bytes", "backend_bytes")


class BlobCache:
    def __init__(self, root: Path, backend: Backend, *, max_size: int, high: float = 0.9, low: float = 0.8,
                 metrics: Metrics | None = None, clock: Callable[[], float] = time.time):
        self.root = Path(root)
        self.blobs_dir = self.root / "blobs"
        self._blobs = str(self.blobs_dir)
        self.tmp_dir = self.root / "tmp"
        for d in (self.blobs_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.index = CacheIndex(self.root / "index.db")
        self.backend = backend
        self.max_size = max_size
        self.high, self.low = watermarks(max_size, high, low)
        self.metrics = metrics or Metrics()
        self.now = clock
        self._failures = 0
        self.wakeup = threading.Event()
        """Set when a prefetch is queued: the prefetch runner of this process starts at once."""
        self.on_range_miss: Callable[[str], None] | None = None
        """Called with the digest when a byte range misses (the prefetch queue takes it)."""
        self._counts: dict[str, int] = dict.fromkeys(COUNTS, 0)
        self._counts_lock = threading.Lock()
        self._leases: dict[str, list] = {}
        """digest -> [read id, readers, size, reads not yet counted in the index, last of them]"""
        self._leases_lock = threading.Lock()
        self.update_gauges()

    # ---- counts (hits, misses, bytes by source): flushed into the index, shown per replica ----
    def _tally(self, name: str, n: int = 1) -> None:
        with self._counts_lock:
            self._counts[name] += n

    def take_counts(self) -> dict[str, int]:
        """What this process counted since the last call (the heartbeat adds it to the index)."""
        with self._counts_lock:
            taken, self._counts = self._counts, dict.fromkeys(COUNTS, 0)
        return taken

    def counts(self) -> dict[str, int]:
        """This replica's totals: the index's (every process's flushed counts) plus this
        process's unflushed ones."""
        with self._counts_lock:
            mine = dict(self._counts)
        stored = self.index.stats()
        return {k: stored.get(k, 0) + mine[k] for k in COUNTS}

    # ---- layout -------------------------------------------------------------------------
    def path(self, digest: str) -> Path:
        return Path(self.file(digest))

    def file(self, digest: str) -> str:
        """The path of ``digest``'s file; digests come from blob rows or the index and are
        checked again here before they name a file."""
        if not _DIGEST.fullmatch(digest):
            Digest.parse(digest)  # the precise error
            raise ValueError(f"not a digest the cache stores: {digest!r}")
        alg, _, hex_ = digest.partition(":")
        return f"{self._blobs}/{alg}/{hex_}"

    def tmp_path(self, digest: str, pid: int) -> Path:
        return self.tmp_dir / f"{Digest.parse(digest).hex}.{pid}.{next(_seq)}"

    # ---- the read path ------------------------------------------------------------------
    def read(self, digest: str, size: int, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """The bytes of blob ``digest`` (``size`` bytes per its row) from ``offset``. A cache that
        fails (its index or its disk) costs the cache, never the pull: served from the backend."""
        length = size - offset if length is None else min(length, size - offset)
        try:
            return self._read(digest, size, offset, length)
        except (CacheIndexError, OSError) as exc:
            self._failures += 1
            if self._failures == 1 or self._failures % 1000 == 0:
                log.error("cache: failing (%s, %d times); serving from storage", exc, self._failures)
            self.metrics.inc("dockyard_cache_uncached_total", reason="error")
            return self._passthrough(self.backend(digest, offset, length))

    def _read(self, digest: str, size: int, offset: int, length: int) -> Iterator[bytes]:
        hit = self._open_hit(digest, size)
        if hit is not None:
            fd, _ = hit
            self.metrics.inc("dockyard_cache_hits_total")
            self._tally("hits")
            return _Stream(self._file_chunks(fd, offset, length),
                           lambda _done: self._end_hit(fd, digest))
        self.metrics.inc("dockyard_cache_misses_total")
        self._tally("misses")
        source = self.backend(digest, offset, length)  # a missing object raises here, before any byte
        if offset != 0 or length != size:
            if self.on_range_miss is not None:
                self.on_range_miss(digest)
            return self._passthrough(source)
        fill = self._reserve(digest, size)
        if fill is None:
            return self._passthrough(source)
        return self._fill_stream(digest, size, fill, source)

    def fill(self, digest: str, size: int) -> bool:
        """Bring ``digest`` into the cache without a client (prefetch). False if it is not
        cached afterwards (no room, or a fill that failed verification)."""
        entry = self.index.get(digest)
        if entry is not None and entry.state == READY:
            return True
        fill = self._reserve(digest, size)
        if fill is None:
            entry = self.index.get(digest)
            return entry is not None and entry.state == READY
        try:
            source = self.backend(digest, 0, size)
        except BaseException:
            self.index.abandon(digest, fill)
            raise
        stream = self._fill_stream(digest, size, fill, source, count=False)
        for _ in stream:
            pass
        entry = self.index.get(digest)
        return entry is not None and entry.state == READY

    def _open_hit(self, digest: str, size: int) -> tuple[int, str] | None:
        """An open file of a ready entry under a read lease, or None. The readers of one digest
        in this process share one lease row (taken by the first, given back by the last, with
        the hits and last use of the others): a hot blob costs the index no write per pull."""
        now = self.now()
        with self._leases_lock:
            lease = self._leases.get(digest)
            if lease is not None:
                if lease[2] != size:
                    return None
                lease[1] += 1
                lease[3] += 1
                lease[4] = max(lease[4], now)
            else:
                read_id = self.index.begin_read(digest, size, os.getpid(), now)
                if read_id is None:
                    return None
                self._leases[digest] = [read_id, 1, size, 0, now]
        try:
            return os.open(self.file(digest), os.O_RDONLY), digest
        except BaseException as exc:
            self._release(digest)
            if not isinstance(exc, FileNotFoundError):
                raise
            log.warning("cache: entry %s has no file; dropped (clean would have)", digest)
            self.index.drop(digest, READY)
            self.update_gauges()
            return None

    def _release(self, digest: str) -> None:
        with self._leases_lock:
            lease = self._leases[digest]
            lease[1] -= 1
            if lease[1] == 0:
                del self._leases[digest]
                self.index.end_read(lease[0], digest, lease[3], lease[4])

    def _file_chunks(self, fd: int, offset: int, length: int) -> Iterator[bytes]:
        pos, end = offset, offset + length
        while pos < end:
            chunk = os.pread(fd, min(CHUNK, end - pos), pos)
            if not chunk:
                raise OSError(f"cache file shorter than its entry at {pos}")
            pos += len(chunk)
            self.metrics.inc("dockyard_cache_served_bytes_total", len(chunk), source="cache")
            self._tally("cache_bytes", len(chunk))
            yield chunk

    def _end_hit(self, fd: int, digest: str) -> None:
        try:
            os.close(fd)
        finally:
            self._release(digest)

    def _passthrough(self, source: Iterator[bytes]) -> Iterator[bytes]:
        try:
            for chunk in source:
                self.metrics.inc("dockyard_cache_served_bytes_total", len(chunk), source="backend")
                self._tally("backend_bytes", len(chunk))
                yield chunk
        finally:
            _close(source)

    # ---- filling ------------------------------------------------------------------------
    def _reserve(self, digest: str, size: int) -> int | None:
        """Reserve room for a fill; the pid that owns it, or None (serve without caching)."""
        pid = os.getpid()
        if size > self.max_size:
            self.metrics.inc("dockyard_cache_uncached_total", reason="too_large")
            return None
        for _ in range(8):
            outcome, chosen = self.index.reserve(digest, size, pid, self.now(), self.max_size, self.low, victims)
            if outcome == "reserved":
                self.update_gauges()
                return pid
            if outcome != "evict":
                self.metrics.inc("dockyard_cache_uncached_total", reason=outcome)
                return None
            self.remove_files(chosen, "fill")
        self.metrics.inc("dockyard_cache_uncached_total", reason="contention")
        return None

    def remove_files(self, chosen: list[Entry], reason: str, *, gauges: bool = True) -> None:
        """Delete the files of entries marked evicting, then their rows (one log line each)."""
        if not chosen:
            return
        with Unlinker() as unlinker:
            unlinker.unlink([self.file(e.key) for e in chosen])
        self.forget(chosen, reason, gauges=gauges)

    def forget(self, chosen: list[Entry], reason: str, *, gauges: bool = True) -> None:
        """The rows of evicted entries whose files are gone: deleted in one statement, with a
        log line per entry and the eviction metrics."""
        if not chosen:
            return
        now = self.now()
        for e in chosen:
            log.info("cache: evicted %s (%d bytes, last used %.0f s ago, %s)", e.key, e.size, now - e.last_used,
                     reason)
        self.metrics.inc("dockyard_cache_evictions_total", len(chosen), reason=reason)
        self.metrics.inc("dockyard_cache_evicted_bytes_total", sum(e.size for e in chosen), reason=reason)
        self.index.evicted([e.key for e in chosen])
        if gauges:
            self.update_gauges()

    def _fill_stream(self, digest: str, size: int, pid: int, source: Iterator[bytes],
                     count: bool = True) -> Iterator[bytes]:
        tmp = self.tmp_path(digest, pid)
        try:
            fh = open(tmp, "xb")
        except OSError:
            self.index.abandon(digest, pid)
            raise
        hasher = hashlib.new(Digest.parse(digest).algorithm)
        state = {"written": 0, "ok": True, "committed": False}

        def chunks() -> Iterator[bytes]:
            try:
                for chunk in source:
                    if state["written"] + len(chunk) > size:  # never past the reservation
                        state["ok"] = False
                        chunk = chunk[: size - state["written"]]
                    fh.write(chunk)
                    hasher.update(chunk)
                    state["written"] += len(chunk)
                    if state["written"] == size and not state["committed"]:
                        # the entry is ready before the client has its last byte: a finished pull is cached
                        state["committed"] = True
                        self._commit(digest, size, pid, tmp, fh, hasher, state["ok"])
                    if count:
                        self.metrics.inc("dockyard_cache_served_bytes_total", len(chunk), source="backend")
                        self._tally("backend_bytes", len(chunk))
                    yield chunk
                    if not state["ok"]:
                        return
            finally:
                _close(source)

        def finish(done: bool) -> None:
            try:
                if state["committed"]:
                    return
                if state["written"] == size:  # an empty blob
                    state["committed"] = True
                    self._commit(digest, size, pid, tmp, fh, hasher, state["ok"])
                    return
            finally:
                if not fh.closed:
                    fh.close()
            self._discard(digest, pid, tmp)

        return _Stream(chunks(), finish)

    def _commit(self, digest, size, pid, tmp: Path, fh, hasher, ok: bool) -> None:
        """Verify and publish a complete fill; a disk that fails here costs the entry, not the pull."""
        try:
            self._publish(digest, size, pid, tmp, fh, hasher, ok)
        except OSError as exc:
            log.error("cache: could not store %s (%s); served without caching", digest, exc)
            if not fh.closed:
                fh.close()
            self._discard(digest, pid, tmp)

    def _publish(self, digest, size, pid, tmp: Path, fh, hasher, ok: bool) -> None:
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
        got = f"{Digest.parse(digest).algorithm}:{hasher.hexdigest()}"
        if not ok or got != digest or tmp.stat().st_size != size:
            log.error("cache: fill of %s failed verification (got %s, %d bytes); not cached", digest, got,
                      tmp.stat().st_size)
            self.metrics.inc("dockyard_cache_verify_failures_total")
            self._discard(digest, pid, tmp)
            return
        final = self.path(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
        dirfd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
        faults.point("cache.before_ready")
        if not self.index.complete(digest, pid, self.now()):  # clean took the reservation meanwhile
            final.unlink(missing_ok=True)
        self.update_gauges()

    def _discard(self, digest: str, pid: int, tmp: Path) -> None:
        tmp.unlink(missing_ok=True)
        self.index.abandon(digest, pid)
        self.update_gauges()

    def update_gauges(self) -> None:
        n, total = self.index.totals()
        self.metrics.set("dockyard_cache_size_bytes", total)
        self.metrics.set("dockyard_cache_entries", n)
