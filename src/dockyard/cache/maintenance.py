"""What an operator does to a replica's blob cache: list, clean, prune, delete, clear.

Every destructive operation has a dry run, a report (files and bytes) and a log line per
object, and decides from the index (the one source of truth); evictions go through
:func:`dockyard.lru.victims`, least recently used first, never pinned or in-use entries.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dockyard.cache.blobcache import BlobCache
from dockyard.cache.evict import Pending, Unlinker
from dockyard.errors import Conflict, RegistryError
from dockyard.lru import Entry, victims
from dockyard.meta.cacheindex import EVICTING, FILLING, READY, CacheEntry
from dockyard.meta.prefetchqueue import PrefetchQueue
from dockyard.oci.digest import Digest

log = logging.getLogger(__name__)
PAGE = 1000
FORGET = 4000
"""Rows of pruned entries deleted in one statement (their files are gone)."""


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lru(e: CacheEntry) -> Entry:
    return Entry(e.digest, e.size, e.last_used, e.pinned, e.in_use)


@dataclass
class CleanReport:
    total_files_cleaned: int = 0
    total_bytes_cleaned: int = 0
    invalid: int = 0
    incomplete: int = 0
    unknown_files: int = 0
    missing_files: int = 0
    stale_reads: int = 0
    dry_run: bool = False
    items: list = field(default_factory=list)

    def add(self, kind: str, what: str, size: int, files: int = 1) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        self.total_files_cleaned += files
        self.total_bytes_cleaned += size
        if len(self.items) < 100:
            self.items.append({"kind": kind, "what": what, "bytes": size})
        log.info("cache clean%s: %s %s (%d bytes)", " (dry run)" if self.dry_run else "", kind, what, size)


def _remove(path: Path, dry_run: bool) -> int:
    """Bytes a file held (removed unless ``dry_run``), -1 if there was none."""
    try:
        size = path.stat().st_size
        if not dry_run:
            path.unlink()
    except FileNotFoundError:
        return -1
    return size


def _sha(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            h.update(chunk)
    return f"{algorithm}:{h.hexdigest()}"


def clean(cache: BlobCache, stall_time: float, *, dry_run: bool = False, verify: bool = False) -> CleanReport:
    """Remove invalid entries, incomplete ones whose fill stalled (older than ``stall_time`` or
    whose process is gone), entries whose file is gone, files no entry knows, leases of dead readers."""
    report = CleanReport(dry_run=dry_run)
    index, now = cache.index, cache.now()
    dead = [p for p in index.reader_pids() if not alive(p)]
    if dead:
        report.stale_reads = len(dead)
        if not dry_run:
            index.drop_reads_of(dead)
    after = ""
    while page := index.page(after, PAGE):
        after = page[-1].digest
        for e in page:
            if e.state == FILLING:
                path = cache.path(e.digest)
                if alive(e.owner) and now - e.created <= stall_time:
                    continue
                freed = max(0, _remove(path, dry_run))
                for tmp in cache.tmp_dir.glob(f"{Digest.parse(e.digest).hex}.{e.owner}.*"):
                    freed += max(0, _remove(tmp, dry_run))
                if not dry_run and not index.drop(e.digest, FILLING):
                    continue
                report.add("incomplete", e.digest, freed)
            elif e.state == EVICTING:  # an eviction that a killed process did not finish
                freed = max(0, _remove(cache.path(e.digest), dry_run))
                if not dry_run:
                    index.evicted([e.digest])
                report.add("invalid", e.digest, freed)
            elif e.state == READY:
                path = cache.file(e.digest)
                try:
                    size = os.stat(path).st_size
                except FileNotFoundError:
                    if dry_run or index.drop(e.digest, READY):
                        report.add("missing_files", e.digest, 0, files=0)
                    continue
                bad = size != e.size or (verify and _sha(Path(path), e.digest.partition(":")[0]) != e.digest)
                if bad and (dry_run or index.mark_evicting([e.digest])):
                    if not dry_run:
                        cache.remove_files([_lru(e)], "invalid")
                    report.add("invalid", e.digest, size)
                    log.warning("cache: entry %s failed verification (%d bytes on disk, %d expected)",
                                e.digest, size, e.size)
    _unknown_files(cache, report, dry_run)
    cache.update_gauges()
    return report


def recover(cache: BlobCache) -> None:
    """At start: give back the reservations and read leases of processes that are gone (a
    replica killed while it filled or served), without walking the directory (clean does)."""
    dead = [p for p in cache.index.reader_pids() if not alive(p)]
    if dead:
        cache.index.drop_reads_of(dead)
    for e in cache.index.filling():
        if not alive(e.owner):
            for tmp in cache.tmp_dir.glob(f"{Digest.parse(e.digest).hex}.{e.owner}.*"):
                tmp.unlink(missing_ok=True)
            cache.path(e.digest).unlink(missing_ok=True)
            if cache.index.drop(e.digest, FILLING):
                log.info("cache: removed the incomplete fill of %s left by process %s", e.digest, e.owner)
    cache.update_gauges()


def _unknown_files(cache: BlobCache, report: CleanReport, dry_run: bool) -> None:
    """Files no entry knows: the directory is read in batches checked against the index with
    one query each (memory flat in the cache size)."""
    index = cache.index

    def batches(directory: Path):
        batch = []
        with os.scandir(directory) as it:
            for item in it:
                batch.append(item)
                if len(batch) == PAGE:
                    yield batch
                    batch = []
        if batch:
            yield batch

    for alg_dir in (p for p in cache.blobs_dir.iterdir() if p.is_dir()):
        for batch in batches(alg_dir):
            known = index.known([f"{alg_dir.name}:{item.name}" for item in batch])
            for item in batch:
                if f"{alg_dir.name}:{item.name}" not in known:
                    size = _remove(Path(item.path), dry_run)
                    if size >= 0:
                        report.add("unknown_files", item.path, size)
    for batch in batches(cache.tmp_dir):
        for item in batch:
            hex_, _, rest = item.name.partition(".")
            pid = rest.partition(".")[0]
            owned = [e for alg in ("sha256", "sha512") for e in [index.get(f"{alg}:{hex_}")]
                     if e is not None and e.state == FILLING and str(e.owner) == pid]
            if owned:
                continue
            size = _remove(Path(item.path), dry_run)
            if size >= 0:
                report.add("unknown_files", item.path, size)


@dataclass
class PruneReport:
    total_files_pruned: int = 0
    total_bytes_pruned: int = 0
    size_before: int = 0
    size_after: int = 0
    low_watermark: int = 0
    dry_run: bool = False


def prune(cache: BlobCache, *, dry_run: bool = False, only_above_high: bool = False) -> PruneReport:
    """Evict least recently used entries down to the low watermark (scheduled runs: only once the
    cache is above the high watermark). Pages of the index keep memory flat in the cache size.

    Per page of victims: one transaction marks them evicting (they stop being served and still
    count), then a few threads delete their files while the next page is chosen and marked; the
    rows of entries whose files are gone are deleted a few pages at a time (each such commit
    rewrites much of the index: fewer of them, fewer checkpoints). A prune killed anywhere leaves
    ``evicting`` entries, never served, that ``clean`` finishes."""
    _, total = cache.index.totals()
    report = PruneReport(size_before=total, size_after=total, low_watermark=cache.low, dry_run=dry_run)
    if total <= (cache.high if only_above_high else cache.low):
        return report
    after = None
    pending: list[tuple[list[Entry], Pending]] = []
    gone: list[Entry] = []
    with Unlinker() as unlinker:
        try:
            while total > cache.low:
                page = cache.index.lru_page(after, PAGE)
                if not page:
                    break
                after = (page[-1].last_used, page[-1].key)
                chosen = list(victims(page, total, cache.low))
                if dry_run:
                    for v in chosen:
                        log.info("cache prune (dry run): would evict %s (%d bytes)", v.key, v.size)
                elif chosen:
                    marked = cache.index.mark_evicting([v.key for v in chosen], force_pinned=False)
                    chosen = [_lru(e) for e in marked]
                    pending.append((chosen, unlinker.start([cache.file(v.key) for v in chosen])))
                    if len(pending) > 1:  # the previous page's files: gone by now, mostly
                        gone += _wait(pending.pop(0))
                    if len(gone) >= FORGET:
                        cache.forget(gone, "prune", gauges=False)
                        gone = []
                report.total_files_pruned += len(chosen)
                report.total_bytes_pruned += sum(v.size for v in chosen)
                total -= sum(v.size for v in chosen)
        finally:
            for p in pending:
                gone += _wait(p)
            cache.forget(gone, "prune", gauges=False)
    report.size_after = total
    cache.update_gauges()
    return report


def _wait(pending: tuple[list[Entry], Pending]) -> list[Entry]:
    chosen, unlinked = pending
    unlinked.wait()
    return chosen


def delete(cache: BlobCache, digest: str, *, dry_run: bool = False) -> dict:
    """Evict one entry (pinned too); 404 if it is not cached, 409 while it is read or filled."""
    entry = cache.index.get(digest)
    if entry is None:
        raise RegistryError("BLOB_UNKNOWN", "blob not in this replica's cache", {"digest": digest})
    if entry.state != READY or entry.in_use:
        raise Conflict("DENIED", "the entry is being read or filled; try again", {"digest": digest})
    if not dry_run:
        if not cache.index.mark_evicting([digest]):
            raise Conflict("DENIED", "the entry is being read or filled; try again", {"digest": digest})
        cache.remove_files([_lru(entry)], "delete")
    return {"total_files_deleted": 1, "total_bytes_deleted": entry.size, "dry_run": dry_run}


def clear(cache: BlobCache, *, dry_run: bool = False) -> dict:
    """Evict every entry that nobody reads (pinned too) and empty the prefetch queue."""
    files = size = skipped = 0
    after = ""
    while page := cache.index.page(after, PAGE):
        after = page[-1].digest
        ready = [e for e in page if e.state == READY]
        skipped += sum(1 for e in ready if e.in_use)
        chosen = [e for e in ready if not e.in_use]
        if not dry_run:
            chosen = cache.index.mark_evicting([e.digest for e in chosen])
            cache.remove_files([_lru(e) for e in chosen], "clear")
        files += len(chosen)
        size += sum(e.size for e in chosen)
    queue = PrefetchQueue(cache.index)
    queued = queue.length() if dry_run else queue.clear()
    return {"total_files_deleted": files, "total_bytes_deleted": size, "skipped_in_use": skipped,
            "prefetches_removed": queued, "dry_run": dry_run}


def listing(cache: BlobCache, limit: int = 1000) -> dict:
    n, total = cache.index.totals()
    entries = []
    after = ""
    while len(entries) < limit and (page := cache.index.page(after, min(PAGE, limit - len(entries)))):
        after = page[-1].digest
        entries += [{"digest": e.digest, "size": e.size, "state": e.state, "hits": e.hits,
                     "last_accessed": e.last_used, "created": e.created, "pinned": e.pinned, "in_use": e.in_use}
                    for e in page]
    queue = PrefetchQueue(cache.index)
    return {"entries": entries, "total_entries": n, "total_bytes": total, "max_size": cache.max_size,
            "high_watermark": cache.high, "low_watermark": cache.low,
            "queued": [asdict(q) for q in queue.listing(limit)], "queue_length": queue.length()}
