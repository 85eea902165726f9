"""Building the running registry from settings: database, storage, app, HTTP server."""

from __future__ import annotations

import logging
import os

from dockyard.config import Config
from dockyard.meta.db import Database
from dockyard.registry.context import Registry
from dockyard.storage import open_driver

log = logging.getLogger(__name__)
CONFIG_ENV = "DOCKYARD_CONFIG_FILE"


def build_registry(cfg: Config, *, migrate: bool = True) -> Registry:
    cfg.data_path.mkdir(parents=True, exist_ok=True)
    db = Database(cfg.effective_database_url)
    if migrate:
        db.migrate()
    return Registry(config=cfg, db=db, storage=open_driver(cfg))


def app_factory():
    """uvicorn factory used by worker processes: settings come from the environment."""
    from dockyard import config as config_mod
    from dockyard.api.app import create_app
    from dockyard.logsetup import setup

    cfg = config_mod.load(os.environ.get(CONFIG_ENV) or None)
    setup(cfg.log_level)
    return create_app(build_registry(cfg, migrate=False))


def serve(cfg: Config, config_path: str | None) -> None:
    import uvicorn

    from dockyard.api.app import create_app

    registry = build_registry(cfg)  # migrates once, before any worker starts
    host, port = cfg.host_port
    log.info("dockyard listening on http://%s:%d (database %s, storage %s)", host, port,
             cfg.effective_database_url.split("@")[-1], cfg.effective_storage_root)
    common = dict(host=host, port=port, log_level=cfg.log_level, access_log=False,
                  http="httptools", loop="uvloop", proxy_headers=False)
    if cfg.workers > 1:
        if config_path:
            os.environ[CONFIG_ENV] = config_path
        _export(cfg)
        uvicorn.run("dockyard.server:app_factory", factory=True, workers=cfg.workers, **common)
    else:
        uvicorn.run(create_app(registry), **common)


def _export(cfg: Config) -> None:
    """Pass command-line overrides to worker processes through the environment."""
    from dataclasses import fields

    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, dict):
            value = ",".join(f"{k}={v}" for k, v in value.items())
        os.environ[f"DOCKYARD_{f.name.upper()}"] = str(value)
