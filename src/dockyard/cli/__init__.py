"""The ``dockyard`` command line."""

from __future__ import annotations

import argparse
import sys
import time

from dockyard.errors import RegistryError, Unavailable
from dockyard import __version__
from dockyard import config as config_mod
from dockyard.cli.common import _admin_common, _common, _emit, _human, _load, _overrides, _registry  # noqa: F401
from dockyard.cli import mirror as _mirror_cli
from dockyard.cli import remote
from dockyard.cli.common import examples

# Command groups in their own modules: each has register(sub) adding its subparsers.
from dockyard.cli import agent as _agent  # noqa: E402
from dockyard.cli import cache as _cache_cli  # noqa: E402
from dockyard.cli import events as _events  # noqa: E402
from dockyard.cli import hosts as _hosts  # noqa: E402

GROUPS: tuple = (remote, _mirror_cli, _cache_cli, _events, _hosts, _agent)


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
    if getattr(args, "grace", None) is not None:
        overrides["grace"] = parse_grace(args.grace)
    if args.delete_untagged is not None:
        overrides["delete_untagged"] = args.delete_untagged
        if args.delete_untagged:
            overrides["sweep_untagged"] = True
    return overrides


def parse_grace(text: str) -> float:
    """``--grace 10m``: a duration with its unit (a bare number would be seconds)."""
    from dockyard.values import parse_duration

    if text.strip().replace(".", "", 1).isdigit():
        raise config_mod.ConfigError(f"--grace {text.strip()!r} needs a unit (e.g. 10m, 1h)")
    return parse_duration(text)


def gc_text(data: dict) -> str:
    """What dockyard gc prints, from the run's summary (Collector.summary, local or remote)."""
    from dockyard.report import render

    label = f"{data['grace']['from']} {_human(data['grace']['seconds'])}"
    lines = [f"{w['entries']} {queue} still in their grace period ({label}): the first is due "
             f"in {_human(w['first_due_in_seconds'])}" for queue, w in sorted(data["waiting"].items())]
    return render(data) + "".join(f"\n{line}" for line in lines)


def gc_status_text(data: dict) -> str:
    """What dockyard gc --status prints: every queue's backlog and the last runs."""
    lines = [f"{'queue':<14}{'pending':>10}{'due':>10}"]
    for queue, counts in data["backlog"].items():
        lines.append(f"{queue:<14}{counts['pending']:>10}{counts['due']:>10}")
    lines.append("last runs:" if data["runs"] else "no collection has done anything yet")
    for run in data["runs"]:
        totals = run["report"].get("totals", {})
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(run["started_at"]))
        lines.append(f"  {started}{' (dry run)' if run['dry_run'] else ''} on {run['host']}: "
                     f"{totals.get('objects', 0)} objects, {totals.get('bytes', 0)} bytes, "
                     f"{totals.get('failures', 0)} failures")
    return "\n".join(lines)


def cmd_gc(args: argparse.Namespace) -> int:
    from dockyard.lifecycle.collector import Collector
    from dockyard.progress import progress

    if args.server:
        server = remote.Remote(args.server)
        if args.delete_untagged is not None:
            raise config_mod.ConfigError("--delete-untagged is not available with --server (set delete_untagged "
                                         "on the server, or run dockyard gc beside the database)")
        if args.status:
            data = server.call("GET", "/admin/v1/gc")
            _emit(args, data, gc_status_text(data))
            return 0
        data = server.call("POST", "/admin/v1/gc", {"dry_run": remote.flag(args.dry_run), "grace": args.grace})
    else:
        reg = _registry(args)
        if args.status:
            from dockyard.lifecycle.scheduler import gc_status

            data = gc_status(reg)
            _emit(args, data, gc_status_text(data))
            return 0
        overrides = gc_overrides(args)
        describe = lambda r: ", ".join(f"{n} {k.objects}" for n, k in r.kinds.items() if k.objects) or "scanning"
        with progress("gc", describe) as update:
            collector = Collector.for_registry(reg, progress=update, **overrides)
            report = collector.run()
        data = collector.summary(report)
    _emit(args, data, gc_text(data))
    return 1 if data["totals"]["failures"] else 0


def cmd_fsck(args: argparse.Namespace) -> int:
    from dockyard.lifecycle.collector import Collector, GcOptions
    from dockyard.lifecycle.fsck import Fsck, render
    from dockyard.progress import progress

    if args.server:  # a report only: deleting leaks and re-queuing rows stay beside the data
        if args.delete:
            raise config_mod.ConfigError("fsck --delete is not available with --server: the admin API reports "
                                         "only; run dockyard fsck --delete beside the database and storage")
        data = remote.Remote(args.server).call("POST", "/admin/v1/fsck", {"verify": remote.flag(args.verify)})
        _emit(args, data, render(data))
        return 1 if data["missing"] or data["corrupt"] else 0
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

    if args.server:
        data = remote.Remote(args.server).call("GET", "/admin/v1/trash",
                                               {"repository": args.repository, "limit": args.limit})
    else:
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


def purge_text(data: dict) -> str:
    # the image's rows go now; its layer links keep their grace (a push may rely on them), so
    # the bytes go with the first collection after gc_delay
    grace = _human(data["freed_after_seconds"])
    if data["dry_run"]:
        return (f"{data['reference']}: purging it would free {data['bytes_freed']} bytes, "
                f"with the first collection {grace} after the purge")
    return (f"{data['reference']}: purged; its {data['bytes_freed']} bytes are freed by the first collection "
            f"after {grace} (dockyard serve runs one every {_human(data['gc_interval_seconds'])}; "
            f"or run dockyard gc then)")


def cmd_trash_purge(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from dockyard.errors import RegistryError
    from dockyard.lifecycle.collector import Collector
    from dockyard.lifecycle import trash

    if args.server:
        data = remote.Remote(args.server).call("POST", "/admin/v1/trash/purge", {
            "reference": args.reference, "dry_run": remote.flag(args.dry_run)})
        _emit(args, data, purge_text(data))
        return 0
    reg = _registry(args)
    try:
        result = trash.purge(reg, args.reference, dry_run=args.dry_run, actor="cli")
    except RegistryError as exc:
        print(f"dockyard: cannot purge {args.reference}: {describe(exc)}", file=sys.stderr)
        return 1
    data = asdict(result)
    if not args.dry_run:
        data["collection"] = Collector.for_registry(reg).run().as_dict()
    _emit(args, data, purge_text(data))
    return 0


def restore_text(data: dict) -> str:
    lines = [f"restored {data['reference']} ({data['restored_manifests']} manifests); tags: "
             f"{', '.join(data['restored_tags']) or 'none'}"]
    for tag, why in data["skipped_tags"].items():
        lines.append(f"  tag {tag} not restored: {why}")
    return "\n".join(lines)


def describe(exc) -> str:
    """A domain error as a sentence: its message, then its details as 'key: value' pairs."""
    detail = exc.detail
    if isinstance(detail, dict) and detail:
        def plain(v):
            return ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
        return f"{exc.message} (" + "; ".join(f"{k}: {plain(v)}" for k, v in detail.items()) + ")"
    return f"{exc.message}{f' ({detail})' if detail else ''}"


def cmd_restore(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from dockyard.errors import RegistryError
    from dockyard.lifecycle import trash

    if args.server:
        data = remote.Remote(args.server).call("POST", "/admin/v1/trash/restore", {"reference": args.reference})
    else:
        try:
            data = asdict(trash.restore(_registry(args), args.reference, actor="cli"))
        except RegistryError as exc:
            print(f"dockyard: cannot restore {args.reference}: {describe(exc)}", file=sys.stderr)
            return 1
    _emit(args, data, restore_text(data))
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
    if args.server:
        return _prune_remote(args, adhoc)
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


def _prune_remote(args: argparse.Namespace, adhoc: dict) -> int:
    from dockyard.lifecycle.prune import render

    if len(args.in_use or []) > 1:
        raise config_mod.ConfigError("with --server, give at most one --in-use source")
    body = None
    if args.in_use:
        path = args.in_use[0]
        body = sys.stdin.read() if path == "-" else open(path).read()
    data = remote.Remote(args.server).call("POST", "/admin/v1/prune", {
        "policy": args.policy, "confirm": remote.flag(args.confirm), "repository": args.repository,
        "ignore_invalid_refs": remote.flag(args.ignore_invalid_refs), **{k: str(v) for k, v in adhoc.items()}},
        content=body)
    _emit(args, data, render(data))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dockyard", description="OCI registry with a lifecycle engine", **examples(
        "dockyard serve --config /etc/dockyard/dockyard.toml",
        "dockyard gc --dry-run --config /etc/dockyard/dockyard.toml",
        "dockyard COMMAND --help                          # each command's options and examples"))
    parser.add_argument("--version", action="version", version=f"dockyard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve_examples = examples(
        "dockyard serve                                   # SQLite + filesystem in ./dockyard-data, 127.0.0.1:5000",
        "dockyard serve --config /etc/dockyard/dockyard.toml --workers 4",
        "DOCKYARD_GC_DELAY=2h DOCKYARD_METRICS_LISTEN=127.0.0.1:9100 dockyard serve --data-dir /var/lib/dockyard")
    serve = sub.add_parser("serve", help="run the registry",
                           **{**serve_examples, "epilog": serve_examples["epilog"] + "\n\n" + config_mod.describe()})
    _common(serve)
    serve.add_argument("--listen", help="HOST:PORT (setting listen)")
    serve.add_argument("--workers", type=int, help="HTTP worker processes (setting workers)")
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="bring the database schema up to date", **examples(
        "dockyard migrate --config /etc/dockyard/dockyard.toml",
        "dockyard migrate --database-url postgresql://db.internal/dockyard"))
    _common(migrate)
    migrate.set_defaults(func=cmd_migrate)

    gc = sub.add_parser("gc", help="run the garbage collector once, until nothing is due", **examples(
        "dockyard gc --dry-run --data-dir /var/lib/dockyard     # what would go, nothing deleted",
        "dockyard gc --config /etc/dockyard/dockyard.toml --output json",
        "dockyard gc --delete-untagged --config /etc/dockyard/dockyard.toml"))
    _admin_common(gc, remote=True)
    gc.add_argument("--dry-run", action="store_true", help="list what would go, delete nothing")
    gc.add_argument("--delete-untagged", action=argparse.BooleanOptionalAction, default=None,
                    help="override the delete_untagged setting for this run; --delete-untagged also "
                         "reviews every untagged manifest that has no pending review (untagged while the "
                         "setting was off), so they are collected too (children of a live index and "
                         "referrers of a live subject stay; images pushed within gc_delay wait for it)")
    gc.add_argument("--grace", metavar="DURATION",
                    help="collect now what lost its last reference more than DURATION ago (e.g. 10m), instead "
                         "of waiting for gc_delay: for a full disk. At least 5m. Risk: a push whose manifest "
                         "comes more than DURATION after one of its layers loses that layer (the manifest push "
                         "fails cleanly and must be repeated); uploads in progress and blobs being committed "
                         "keep their protection (upload_ttl, tombstone waits)")
    gc.add_argument("--status", action="store_true", help="show the review queues' backlog and the last runs")
    gc.set_defaults(func=cmd_gc)

    fsck = sub.add_parser("fsck", help="reconcile storage with the database (deletes leaked data only with "
                                       "--delete) and check that every unreferenced row is queued for review",
                          **examples("dockyard fsck --config /etc/dockyard/dockyard.toml            # report only",
                                     "dockyard fsck --verify --output json --data-dir /var/lib/dockyard",
                                     "dockyard fsck --delete --config /etc/dockyard/dockyard.toml   # leaks older "
                                     "than fsck_grace (default 1h) go"))
    _admin_common(fsck, remote=True)
    fsck.add_argument("--delete", action="store_true", help="remove leaked data (older than fsck_grace): hand it to the collector as tombstones, then run a collection")
    fsck.add_argument("--verify", action="store_true", help="re-hash every blob and report corrupt ones")
    fsck.add_argument("--requeue", action=argparse.BooleanOptionalAction, default=True,
                      help="rows (blob, layer link, manifest, repository) that nothing references and that have "
                           "no pending review are always reported; by default they are also queued for review "
                           "after gc_delay (safe: the collector re-checks under lock)")
    fsck.set_defaults(func=cmd_fsck)

    scrub = sub.add_parser("scrub", help="purge trashed images past scrub_time and collect their data", **examples(
        "dockyard scrub --dry-run --config /etc/dockyard/dockyard.toml",
        "dockyard scrub --daemon --config /etc/dockyard/dockyard.toml   # every wakeup_time (default 5m)"))
    _admin_common(scrub, remote=False)
    scrub.add_argument("--dry-run", action="store_true", help="list what would be purged, change nothing")
    scrub.add_argument("--daemon", action="store_true",
                       help="run every wakeup_time (a duration setting, default 5m) until stopped")
    scrub.set_defaults(func=cmd_scrub)

    trash_p = sub.add_parser("trash", help="deleted images and tags that can still be restored", **examples(
        "dockyard trash list --repository 'team/*' --config /etc/dockyard/dockyard.toml",
        "dockyard trash purge team/app@sha256:4f1c... --dry-run --config /etc/dockyard/dockyard.toml"))
    trash_sub = trash_p.add_subparsers(dest="trash_command", required=True)
    tl = trash_sub.add_parser("list", help="list the trash", **examples(
        "dockyard trash list --config /etc/dockyard/dockyard.toml",
        "dockyard trash list --repository 'team/*' --output json --data-dir /var/lib/dockyard"))
    _admin_common(tl, remote=True)
    tl.add_argument("--repository", help="repository name or glob (team/*)")
    tl.add_argument("--limit", type=int, default=1000, help="list at most this many images and tags (default 1000)")
    tl.set_defaults(func=cmd_trash_list)
    tp = trash_sub.add_parser("purge", help="purge one trashed image now: REPO@DIGEST", **examples(
        "dockyard trash purge team/app@sha256:4f1c... --dry-run --config /etc/dockyard/dockyard.toml",
        "dockyard trash purge team/app@sha256:4f1c... --config /etc/dockyard/dockyard.toml"))
    _admin_common(tp, remote=True)
    tp.add_argument("reference", help="the trashed image, REPO@DIGEST (dockyard trash list shows them)")
    tp.add_argument("--dry-run", action="store_true", help="say what the purge would free, change nothing")
    tp.set_defaults(func=cmd_trash_purge)

    prune = sub.add_parser("prune", help="apply a retention policy (a dry run unless --confirm)",
                           description="A manifest is kept if any keep rule keeps it; the rest goes to the trash.",
                           **examples(
        "kubectl get pods,deployments,replicasets,statefulsets,daemonsets,jobs,cronjobs -A -o json > inuse.json",
        "dockyard prune --keep-tag-revisions 3 --keep-younger-than 60m --in-use inuse.json   # preview",
        "dockyard prune --policy nightly --in-use inuse.json --confirm                       # delete (into the trash)"))
    _admin_common(prune, remote=True)
    prune.add_argument("--policy", help="a policy declared in the configuration or through the admin API")
    prune.add_argument("--keep-tag-revisions", type=int, help="keep the N most recent images of each tag")
    prune.add_argument("--keep-younger-than", help="keep what was pushed within this duration, with its unit "
                                                   "(90s, 60m, 12h, 7d, 2w)")
    prune.add_argument("--keep-recent", type=int, help="keep the N most recently pushed manifests per repository")
    prune.add_argument("--repository", help="only this repository")
    prune.add_argument("--in-use", action="append", metavar="FILE",
                       help="workload listing (kubectl ... -o json) or reference list; - for stdin; repeatable")
    prune.add_argument("--ignore-invalid-refs", action="store_true", help="go on when a reference cannot be parsed")
    prune.add_argument("--confirm", action="store_true", help="delete (into the trash); default is a dry run")
    prune.set_defaults(func=cmd_prune)

    restore = sub.add_parser("restore", help="restore a deleted image (REPO@DIGEST) or tag (REPO:TAG)", **examples(
        "dockyard restore team/app@sha256:4f1c... --config /etc/dockyard/dockyard.toml",
        "dockyard restore team/app:v1.2 --data-dir /var/lib/dockyard"))
    _admin_common(restore, remote=True)
    restore.add_argument("reference", help="REPO@DIGEST of a deleted image or REPO:TAG of a deleted tag")
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
    except remote.RemoteError as exc:  # --server: refused or unreachable, said as a sentence
        print(f"dockyard: {exc}", file=sys.stderr)
        return exc.exit_code
    except Unavailable as exc:  # the database or storage failing: one line, not a traceback
        reason = getattr(exc, "reason", None)
        print(f"dockyard: {exc.message}{f' ({reason})' if reason else ''}", file=sys.stderr)
        return 75  # EX_TEMPFAIL: the same command later may succeed
    except RegistryError as exc:  # a domain refusal (no such repository, a conflict ...): one sentence
        print(f"dockyard: {describe(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
