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
