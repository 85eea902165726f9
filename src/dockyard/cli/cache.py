"""``dockyard cache list|prefetch|delete|clear|clean|prune``: this replica's blob cache.

The commands work on the cache directory of the configuration they are given (its index is
the one source of truth and may be shared with a running server); the reports are those of
the admin API (``/admin/v1/cache``), which also reaches every other replica.
"""

from __future__ import annotations

import sys
import time

from dockyard.cli.common import examples, _admin_common, _emit, _registry
from dockyard.config import ConfigError


def _cache(args):
    reg = _registry(args)
    if reg.cache is None:
        raise ConfigError("this registry has no blob cache (it needs storage = \"s3\" and cache_max_size > 0)")
    return reg


def _ago(t: float) -> str:
    return f"{max(0, time.time() - t):.0f}s ago"


def cmd_list(args) -> int:
    from dockyard.cache import maintenance

    data = maintenance.listing(_cache(args).cache, args.limit)
    lines = [f"{'digest':<73} {'state':<8} {'bytes':>12} {'hits':>6} {'last access':>14} pinned"]
    for e in data["entries"]:
        lines.append(f"{e['digest']:<73} {e['state']:<8} {e['size']:>12} {e['hits']:>6} "
                     f"{_ago(e['last_accessed']):>14} {'yes' if e['pinned'] else ''}")
    lines.append(f"{data['total_entries']} entries, {data['total_bytes']} of {data['max_size']} bytes "
                 f"(prune from {data['high_watermark']} down to {data['low_watermark']})")
    lines.append(f"{data['queue_length']} prefetches queued")
    for q in data["queued"]:
        lines.append(f"  {q['target']} (pin: {q['pin']}, attempts {q['attempts']}"
                     f"{', last error: ' + q['last_error'] if q['last_error'] else ''})")
    _emit(args, data, "\n".join(lines))
    return 0


def cmd_prefetch(args) -> int:
    from dockyard.cache import prefetch
    from dockyard.errors import RegistryError

    reg = _cache(args)
    try:
        data = prefetch.enqueue(reg.cache, args.target, args.pin, reg.now())
    except RegistryError as exc:
        print(f"dockyard: {exc.message}: {exc.detail}", file=sys.stderr)
        return 2
    text = f"queued {data['queued']['target']}" + ("" if data["new"] else " (it was queued already)")
    if args.now:
        job = prefetch.PrefetchJob(reg.cache, reg.db, workers=reg.config.cache_prefetch_workers,
                                   platforms=reg.config.cache_prefetch_platforms)
        data["run"] = job.run().as_dict()
        text += (f"; prefetched {data['run']['items_done']} targets ({data['run']['blobs_cached']} blobs, "
                 f"{data['run']['bytes_cached']} bytes), {data['run']['items_failed']} failed")
    _emit(args, data, text)
    return 0


def cmd_delete(args) -> int:
    from dockyard.cache import maintenance
    from dockyard.errors import RegistryError
    from dockyard.validate import check_digest

    reg = _cache(args)
    try:
        data = maintenance.delete(reg.cache, str(check_digest(args.digest)), dry_run=args.dry_run)
    except RegistryError as exc:
        print(f"dockyard: {exc.message}: {exc.detail}", file=sys.stderr)
        return 1
    _emit(args, data, f"{'would delete' if args.dry_run else 'deleted'} {args.digest} "
                      f"({data['total_bytes_deleted']} bytes)")
    return 0


def cmd_clear(args) -> int:
    from dockyard.cache import maintenance

    data = maintenance.clear(_cache(args).cache, dry_run=args.dry_run)
    _emit(args, data, f"{'would delete' if args.dry_run else 'deleted'} {data['total_files_deleted']} entries "
                      f"({data['total_bytes_deleted']} bytes), {data['skipped_in_use']} in use kept, "
                      f"{data['prefetches_removed']} queued prefetches removed")
    return 0


def cmd_clean(args) -> int:
    from dockyard.cache import maintenance

    reg = _cache(args)
    report = maintenance.clean(reg.cache, reg.config.cache_stall_time, dry_run=args.dry_run, verify=args.verify)
    lines = [f"{'would clean' if args.dry_run else 'cleaned'} {report.total_files_cleaned} files "
             f"({report.total_bytes_cleaned} bytes): {report.invalid} invalid, {report.incomplete} incomplete, "
             f"{report.unknown_files} unknown files, {report.missing_files} entries without a file, "
             f"{report.stale_reads} dead readers"]
    lines += [f"  {i['kind']}: {i['what']} ({i['bytes']} bytes)" for i in report.items]
    _emit(args, report.__dict__, "\n".join(lines))
    return 0


def cmd_prune(args) -> int:
    from dockyard.cache import maintenance

    report = maintenance.prune(_cache(args).cache, dry_run=args.dry_run)
    _emit(args, report.__dict__,
          f"{'would prune' if args.dry_run else 'pruned'} {report.total_files_pruned} entries "
          f"({report.total_bytes_pruned} bytes): {report.size_before} -> {report.size_after} bytes "
          f"(low watermark {report.low_watermark})")
    return 0


DRY_RUN = "report what would go (entries and bytes), change nothing"


def register(sub) -> None:
    cache = sub.add_parser("cache", help="this replica's blob cache (storage = s3)", **examples(
        "dockyard cache list --config /etc/dockyard/dockyard.toml",
        "dockyard cache prefetch team/app:v1 --pin",
        "dockyard cache prune --dry-run   # the API (POST /admin/v1/cache/prune) reaches every replica"))
    cs = cache.add_subparsers(dest="cache_command", required=True)
    p = cs.add_parser("list", help="cached blobs (size, hits, last access, pinned) and queued prefetches",
                      **examples("dockyard cache list", "dockyard cache list --limit 50 --output json"))
    _admin_common(p)
    p.add_argument("--limit", type=int, default=1000, help="most entries listed (default 1000)")
    p.set_defaults(func=cmd_list)
    p = cs.add_parser("prefetch", help="queue an image (REPO:TAG, REPO@DIGEST) or a blob (DIGEST) for the cache",
                      **examples("dockyard cache prefetch team/app:v1", "dockyard cache prefetch sha256:4bcff6... --now",
                                 "dockyard cache prefetch team/base@sha256:9a0c... --pin"))
    _admin_common(p)
    p.add_argument("target", help="REPO:TAG, REPO@DIGEST (an index brings its children for the configured "
                                  "platforms) or a blob DIGEST")
    p.add_argument("--pin", action="store_true", help="pin what it brings: never evicted by prune or fills")
    p.add_argument("--now", action="store_true", help="work the queue in this process now, not only in the server")
    p.set_defaults(func=cmd_prefetch)
    p = cs.add_parser("delete", help="evict one blob (DIGEST), pinned or not",
                      **examples("dockyard cache delete sha256:4bcff6... --dry-run"))
    _admin_common(p)
    p.add_argument("digest", help="the blob's digest (sha256:...)")
    p.add_argument("--dry-run", action="store_true", help=DRY_RUN)
    p.set_defaults(func=cmd_delete)
    for name, func, text in (("clear", cmd_clear, "evict every entry nobody reads and empty the prefetch queue"),
                             ("prune", cmd_prune, "evict least recently used entries down to the low watermark")):
        p = cs.add_parser(name, help=text, **examples(f"dockyard cache {name} --dry-run",
                                                      f"dockyard cache {name} --output json"))
        _admin_common(p)
        p.add_argument("--dry-run", action="store_true", help=DRY_RUN)
        p.set_defaults(func=func)
    p = cs.add_parser("clean", help="remove invalid and stalled entries, files no entry knows, entries without a file",
                      **examples("dockyard cache clean --dry-run", "dockyard cache clean --verify"))
    _admin_common(p)
    p.add_argument("--dry-run", action="store_true", help=DRY_RUN)
    p.add_argument("--verify", action="store_true", help="also re-hash every entry")
    p.set_defaults(func=cmd_clean)
