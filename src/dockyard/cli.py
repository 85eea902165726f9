"""The ``dockyard`` command line."""

from __future__ import annotations

import argparse
import sys

from dockyard import __version__
from dockyard import config as config_mod


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML settings file")
    p.add_argument("--data-dir", help="data directory (setting data_dir)")
    p.add_argument("--database-url", help="database URL (setting database_url)")


def _load(args: argparse.Namespace) -> config_mod.Config:
    overrides = {k: getattr(args, k, None) for k in ("data_dir", "database_url", "listen", "workers")}
    return config_mod.load(args.config, **overrides)


def cmd_serve(args: argparse.Namespace) -> int:
    from dockyard.logsetup import setup
    from dockyard.server import serve

    cfg = _load(args)
    setup(cfg.log_level)
    serve(cfg, args.config)
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


def _registry(args: argparse.Namespace):
    from dockyard.logsetup import setup
    from dockyard.server import build_registry

    cfg = _load(args)
    setup(cfg.log_level)
    return build_registry(cfg)


def _emit(args: argparse.Namespace, data: dict, table: str) -> None:
    import json

    if args.output == "json":
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(table)


def cmd_gc(args: argparse.Namespace) -> int:
    from dockyard.lifecycle.collector import Collector
    from dockyard.progress import progress

    reg = _registry(args)
    overrides = {"dry_run": args.dry_run}
    if args.delete_untagged is not None:
        overrides["delete_untagged"] = args.delete_untagged
    describe = lambda r: ", ".join(f"{n} {k.objects}" for n, k in r.kinds.items() if k.objects) or "scanning"
    with progress("gc", describe) as update:
        report = Collector.for_registry(reg, progress=update, **overrides).run()
    _emit(args, report.as_dict(), report.table())
    return 1 if any(k.failures for k in report.kinds.values()) else 0


def cmd_fsck(args: argparse.Namespace) -> int:
    from dockyard.lifecycle.fsck import Fsck
    from dockyard.progress import progress

    reg = _registry(args)
    describe = lambda r: f"{r.scanned_objects} objects, {r.scanned_rows} rows, {r.leaks} leaks"
    with progress("fsck", describe) as update:
        report = Fsck(reg.db, reg.storage, reg.clock, reg.config.fsck_grace, delete=args.delete,
                      verify=args.verify, progress=update).run()
    _emit(args, report.as_dict(), report.table())
    return 1 if report.missing or report.corrupt else 0


def _admin_common(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--output", choices=("table", "json"), default="table")


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
                    help="override the delete_untagged setting for this run")
    gc.set_defaults(func=cmd_gc)

    fsck = sub.add_parser("fsck", help="reconcile storage with the database (dry run unless --delete)")
    _admin_common(fsck)
    fsck.add_argument("--delete", action="store_true", help="remove leaked data (older than fsck_grace)")
    fsck.add_argument("--verify", action="store_true", help="re-hash every blob and report corrupt ones")
    fsck.set_defaults(func=cmd_fsck)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except config_mod.ConfigError as exc:
        print(f"dockyard: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
