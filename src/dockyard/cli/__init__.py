"""The ``dockyard`` command line."""

from __future__ import annotations

import argparse
import sys

from dockyard.errors import Unavailable
from dockyard import __version__
from dockyard import config as config_mod
from dockyard.cli.common import _admin_common, _common, _emit, _human, _load, _overrides, _registry  # noqa: F401

# Command groups in their own modules: each has register(sub) adding its subparsers.
from dockyard.cli import cache as _cache_cli  # noqa: E402

GROUPS: tuple = (_cache_cli,)


def cmd_serve(args: argparse.Namespace) -> int:
    from dockyard.logsetup import setup
    from dockyard.server import StartupError, serve

    values = config_mod.gather(args.config, **_overrides(args))
    cfg = config_mod.from_values(values)
    setup(cfg.log_level, cfg.log_format)
    try:
        serve(cfg, config_mod.dumps(values))  # workers get exactly these settings
    except StartupError as exc:  # a directory or the database: one line, no traceback
        print(f"dockyard: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from dockyard.logsetup import setup
    from dockyard.meta.db import Database

    cfg = _load(args)
    setup(cfg.log_level)
    cfg.data_path.mkdir(parents=True, exist_ok=True)
    Database(cfg.effective_database_url).migrate()
    print("database is at the newest schema")
    return 0


def gc_overrides(args: argparse.Namespace) -> dict:
    """GcOptions overrides of ``dockyard gc``. ``--delete-untagged`` also sweeps: untagged
    manifests with no pending review (untagged while the setting was off) are reviewed too."""
    overrides = {"dry_run": args.dry_run}
    if args.delete_untagged is not None:
        overrides["delete_untagged"] = args.delete_untagged
        if args.delete_untagged:
            overrides["sweep_untagged"] = True
    return overrides


def cmd_gc(args: argparse.Namespace) -> int:
    from dockyard.lifecycle.collector import Collector
    from dockyard.progress import progress

    reg = _registry(args)
    overrides = gc_overrides(args)
    describe = lambda r: ", ".join(f"{n} {k.objects}" for n, k in r.kinds.items() if k.objects) or "scanning"
    with progress("gc", describe) as update:
        collector = Collector.for_registry(reg, progress=update, **overrides)
        report = collector.run()
    waiting = collector.waiting()
    now = reg.clock.now()
    lines = [f"{n} {queue} still in their grace period (gc_delay {_human(reg.config.gc_delay)}): the first is due "
             f"in {_human(first - now)}" for queue, (n, first) in sorted(waiting.items())]
    data = {**report.as_dict(), "waiting": {q: {"entries": n, "first_due_in_seconds": round(first - now, 1)}
                                            for q, (n, first) in waiting.items()}}
    _emit(args, data, report.table() + "".join(f"\n{line}" for line in lines))
    return 1 if any(k.failures for k in report.kinds.values()) else 0


def cmd_fsck(args: argparse.Namespace) -> int:
    from dockyard.lifecycle.collector import Collector, GcOptions
    from dockyard.lifecycle.fsck import Fsck
    from dockyard.progress import progress

    reg = _registry(args)
    describe = lambda r: f"{r.scanned_objects} objects, {r.scanned_rows} rows, {r.leaks} leaks"
    with progress("fsck", describe) as update:
        report = Fsck(reg.db, reg.storage, reg.clock, reg.config.fsck_grace, delete=args.delete,
                      verify=args.verify, progress=update, gc=GcOptions.from_config(reg.config),
                      requeue=args.requeue).run()
    if report.deleted:  # the leaks are tombstones now: the collector deletes them
        Collector.for_registry(reg).run()
    _emit(args, report.as_dict(), report.table())
    return 1 if report.missing or report.corrupt else 0


def cmd_scrub(args: argparse.Namespace) -> int:
    from dockyard.lifecycle.runner import Runner
    from dockyard.lifecycle.scrubber import Scrubber
    from dockyard.progress import progress

    reg = _registry(args)
    if args.daemon:
        runner = Runner("scrub", lambda: Scrubber.for_registry(reg), reg.config.wakeup_time)
        try:
            runner.run_forever()
        except KeyboardInterrupt:
            pass
        return 0
    describe = lambda r: ", ".join(f"{n} {k.objects}" for n, k in r.kinds.items() if k.objects) or "scanning"
    with progress("scrub", describe) as update:
        report = Scrubber.for_registry(reg, progress=update, dry_run=args.dry_run).run()
    _emit(args, report.as_dict(), report.table())
    return 1 if any(k.failures for k in report.kinds.values()) else 0


def cmd_trash_list(args: argparse.Namespace) -> int:
    from dockyard.lifecycle import trash

    data = trash.listing(_registry(args), args.repository, args.limit)
    lines = [f"{'image':<70} {'tags':<20} {'deleted by':<12} {'hours left':>10} {'bytes freed':>12}"]
    for i in data["images"]:
        lines.append(f"{i['repository'] + '@' + i['digest'][:19]:<70} {','.join(i['tags'])[:20]:<20} "
                     f"{(i['deleted_by'] or '-')[:12]:<12} {i['seconds_left'] / 3600:>10.1f} {i['bytes_freed']:>12}")
    lines.append(f"{'tag':<70} {'digest':<20} {'deleted by':<12} {'hours left':>10}")
    for t in data["tags"]:
        lines.append(f"{t['repository'] + ':' + t['tag']:<70} {t['digest'][:19]:<20} {(t['deleted_by'] or '-')[:12]:<12} "
                     f"{t['seconds_left'] / 3600:>10.1f}")
    _emit(args, data, "\n".join(lines))
    return 0


def cmd_trash_purge(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from dockyard.errors import RegistryError
    from dockyard.lifecycle.collector import Collector
    from dockyard.lifecycle import trash

    reg = _registry(args)
    try:
        result = trash.purge(reg, args.reference, dry_run=args.dry_run, actor="cli")
    except RegistryError as exc:
        print(f"dockyard: {exc.message}: {exc.detail}", file=sys.stderr)
        return 1
    data = {**asdict(result), "freed_after_seconds": reg.config.gc_delay}
    if not args.dry_run:
        data["collection"] = Collector.for_registry(reg).run().as_dict()
    # the image's rows go now; its layer links keep their grace (a push may rely on them), so
    # the bytes go with the first collection after gc_delay
    grace = _human(reg.config.gc_delay)
    if args.dry_run:
        text = (f"{result.reference}: purging it would free {result.bytes_freed} bytes, "
                f"with the first collection {grace} after the purge")
    else:
        text = (f"{result.reference}: purged; its {result.bytes_freed} bytes are freed by the first collection "
                f"after {grace} (dockyard serve runs one every {_human(reg.config.gc_interval)}; "
                f"or run dockyard gc then)")
    _emit(args, data, text)
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from dockyard.errors import RegistryError
    from dockyard.lifecycle import trash

    try:
        result = trash.restore(_registry(args), args.reference, actor="cli")
    except RegistryError as exc:
        print(f"dockyard: cannot restore {args.reference}: {exc.message} {exc.detail or ''}", file=sys.stderr)
        return 1
    lines = [f"restored {result.reference} ({result.restored_manifests} manifests); tags: "
             f"{', '.join(result.restored_tags) or 'none'}"]
    for tag, why in result.skipped_tags.items():
        lines.append(f"  tag {tag} not restored: {why}")
    _emit(args, asdict(result), "\n".join(lines))
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from dockyard.config import ConfigError
    from dockyard.lifecycle import inuse as inuse_mod
    from dockyard.policies import Policy
    from dockyard.lifecycle.prune import Pruner
    from dockyard.lifecycle.rules import policies
    from dockyard.progress import progress

    adhoc = {k: v for k, v in {"keep_tag_revisions": args.keep_tag_revisions,
                               "keep_pushed_within": args.keep_younger_than,
                               "keep_recent": args.keep_recent}.items() if v is not None}
    if args.policy and adhoc:
        raise ConfigError("--policy cannot be combined with --keep-* flags")
    if not args.policy and not adhoc:
        raise ConfigError("give --policy NAME or at least one of --keep-tag-revisions, --keep-younger-than, "
                          "--keep-recent")
    policy = None if args.policy else Policy.parse("ad-hoc", adhoc)  # flags are checked before anything opens
    reg = _registry(args)
    if args.policy:
        known = policies(reg)
        if args.policy not in known:
            raise ConfigError(f"no policy named {args.policy!r} (known: {', '.join(sorted(known)) or 'none'})")
        policy = known[args.policy]
    sources = []
    for path in args.in_use or []:
        sources.append((path, sys.stdin.read() if path == "-" else open(path).read()))
    found = inuse_mod.load(sources)
    if found.invalid and not args.ignore_invalid_refs:
        for text, where in found.invalid[:20]:
            print(f"dockyard: invalid image reference {text!r} ({where})", file=sys.stderr)
        print(f"dockyard: {len(found.invalid)} references could not be parsed; nothing was pruned "
              f"(--ignore-invalid-refs to go on without them)", file=sys.stderr)
        return 2
    describe = lambda p: f"{p.totals['repositories']} repositories, {p.totals['deleted']} to delete"
    with progress("prune", describe) as update:
        plan = Pruner(reg, policy, found, confirm=args.confirm, actor="cli", repository=args.repository,
                      progress=update).run()
    _emit(args, plan.as_dict(), plan.table())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dockyard", description="OCI registry with a lifecycle engine")
    parser.add_argument("--version", action="version", version=f"dockyard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the registry", epilog=config_mod.describe(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(serve)
    serve.add_argument("--listen", help="HOST:PORT (setting listen)")
    serve.add_argument("--workers", type=int, help="HTTP worker processes (setting workers)")
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="bring the database schema up to date")
    _common(migrate)
    migrate.set_defaults(func=cmd_migrate)

    gc = sub.add_parser("gc", help="run the garbage collector once, until nothing is due")
    _admin_common(gc)
    gc.add_argument("--dry-run", action="store_true", help="list what would go, delete nothing")
    gc.add_argument("--delete-untagged", action=argparse.BooleanOptionalAction, default=None,
                    help="override the delete_untagged setting for this run; --delete-untagged also "
                         "reviews every untagged manifest that has no pending review (untagged while the "
                         "setting was off), so they are collected too (children of a live index and "
                         "referrers of a live subject stay; images pushed within gc_delay wait for it)")
    gc.set_defaults(func=cmd_gc)

    fsck = sub.add_parser("fsck", help="reconcile storage with the database (deletes leaked data only with "
                                       "--delete) and check that every unreferenced row is queued for review")
    _admin_common(fsck)
    fsck.add_argument("--delete", action="store_true", help="remove leaked data (older than fsck_grace): hand it to the collector as tombstones, then run a collection")
    fsck.add_argument("--verify", action="store_true", help="re-hash every blob and report corrupt ones")
    fsck.add_argument("--requeue", action=argparse.BooleanOptionalAction, default=True,
                      help="rows (blob, layer link, manifest, repository) that nothing references and that have "
                           "no pending review are always reported; by default they are also queued for review "
                           "after gc_delay (safe: the collector re-checks under lock)")
    fsck.set_defaults(func=cmd_fsck)

    scrub = sub.add_parser("scrub", help="purge trashed images past scrub_time and collect their data")
    _admin_common(scrub)
    scrub.add_argument("--dry-run", action="store_true", help="list what would be purged, change nothing")
    scrub.add_argument("--daemon", action="store_true", help="run every wakeup_time until stopped")
    scrub.set_defaults(func=cmd_scrub)

    trash_p = sub.add_parser("trash", help="deleted images and tags that can still be restored")
    trash_sub = trash_p.add_subparsers(dest="trash_command", required=True)
    tl = trash_sub.add_parser("list", help="list the trash")
    _admin_common(tl)
    tl.add_argument("--repository", help="repository name or glob (team/*)")
    tl.add_argument("--limit", type=int, default=1000)
    tl.set_defaults(func=cmd_trash_list)
    tp = trash_sub.add_parser("purge", help="purge one trashed image now: REPO@DIGEST")
    _admin_common(tp)
    tp.add_argument("reference")
    tp.add_argument("--dry-run", action="store_true")
    tp.set_defaults(func=cmd_trash_purge)

    prune = sub.add_parser("prune", help="apply a retention policy (a dry run unless --confirm)",
                           description="A manifest is kept if any keep rule keeps it; the rest goes to the trash.")
    _admin_common(prune)
    prune.add_argument("--policy", help="a policy declared in the configuration or through the admin API")
    prune.add_argument("--keep-tag-revisions", type=int, help="keep the N most recent images of each tag")
    prune.add_argument("--keep-younger-than", help="keep what was pushed within this duration (e.g. 60m, 7d)")
    prune.add_argument("--keep-recent", type=int, help="keep the N most recently pushed manifests per repository")
    prune.add_argument("--repository", help="only this repository")
    prune.add_argument("--in-use", action="append", metavar="FILE",
                       help="workload listing (kubectl ... -o json) or reference list; - for stdin; repeatable")
    prune.add_argument("--ignore-invalid-refs", action="store_true", help="go on when a reference cannot be parsed")
    prune.add_argument("--confirm", action="store_true", help="delete (into the trash); default is a dry run")
    prune.set_defaults(func=cmd_prune)

    restore = sub.add_parser("restore", help="restore a deleted image (REPO@DIGEST) or tag (REPO:TAG)")
    _admin_common(restore)
    restore.add_argument("reference")
    restore.set_defaults(func=cmd_restore)
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except config_mod.ConfigError as exc:
        print(f"dockyard: {exc}", file=sys.stderr)
        return 2
    except Unavailable as exc:  # the database or storage failing: one line, not a traceback
        reason = getattr(exc, "reason", None)
        print(f"dockyard: {exc.message}{f' ({reason})' if reason else ''}", file=sys.stderr)
        return 75  # EX_TEMPFAIL: the same command later may succeed


if __name__ == "__main__":
    raise SystemExit(main())
