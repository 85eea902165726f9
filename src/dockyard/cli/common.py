"""What every ``dockyard`` command shares: the settings options, opening the registry, output."""

from __future__ import annotations

import argparse

from dockyard import config as config_mod


def examples(*lines: str) -> dict:
    """``add_parser`` keywords for a command's ``--help`` epilog: its examples, one command
    line each (``# comment`` lines allowed), shown as written. Every command has some
    (tests/unit/test_cli_help.py walks the parser)."""
    text = "examples:\n" + "\n".join(f"  {line}" for line in lines)
    return {"epilog": text, "formatter_class": argparse.RawDescriptionHelpFormatter}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML settings file")
    p.add_argument("--data-dir", help="data directory (setting data_dir)")
    p.add_argument("--database-url", help="database URL (setting database_url)")


def _overrides(args: argparse.Namespace) -> dict:
    return {k: getattr(args, k, None) for k in ("data_dir", "database_url", "listen", "workers")}


def _load(args: argparse.Namespace) -> config_mod.Config:
    return config_mod.load(args.config, **_overrides(args))


def _registry(args: argparse.Namespace):
    from dockyard.logsetup import setup
    from dockyard.server import build_registry

    cfg = _load(args)
    setup(cfg.log_level)
    if not cfg.database_url and not (cfg.data_path / "dockyard.db").exists():
        # a maintenance command pointed at the wrong place must not create an empty registry there
        raise config_mod.ConfigError(f"no registry in {cfg.data_path} (it holds no dockyard.db): give the "
                                     "registry's --data-dir, or --database-url")
    return build_registry(cfg)


def _emit(args: argparse.Namespace, data: dict, table: str) -> None:
    import json

    if args.output == "json":
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(table)


def _human(seconds: float) -> str:
    """A duration as an operator reads it: 45s, 12m, 3h 5m, 2d 4h."""
    s = max(0, int(round(seconds)))
    for unit, size, sub_unit, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60)):
        if s >= size:
            rest = (s % size) // sub_size
            return f"{s // size}{unit}" + (f" {rest}{sub_unit}" if rest else "")
    return f"{s // 60}m" if s >= 60 else f"{s}s"


def _admin_common(p: argparse.ArgumentParser, remote: bool = False) -> None:
    _common(p)
    p.add_argument("--output", choices=("table", "json"), default="table",
                   help="table for people (default), json for scripts")
    if remote:
        p.add_argument("--server", metavar="URL",
                       help="run against this running server through its admin API (no database access needed; "
                            "credentials from DOCKYARD_USER/DOCKYARD_PASSWORD, DOCKYARD_TOKEN or dockyard login)")
