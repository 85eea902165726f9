"""Building the running registry from settings: database, storage, app, HTTP server."""

from __future__ import annotations

import logging
import os

from dockyard.config import Config
from dockyard.meta.db import Database
from dockyard.registry.context import Registry
from dockyard.storage import open_driver

log = logging.getLogger(__name__)
# the parent's whole configuration, as config.dumps() wrote it, read back by every worker
SETTINGS_ENV = "DOCKYARD_SERVE_SETTINGS"


def build_registry(cfg: Config, *, migrate: bool = True) -> Registry:
    cfg.data_path.mkdir(parents=True, exist_ok=True)
    db = Database(cfg.effective_database_url)
    if migrate:
        db.migrate()
    return Registry(config=cfg, db=db, storage=open_driver(cfg))


def app_factory():
    """uvicorn factory used by worker processes: the parent's settings, every one of them,
    from one JSON environment variable (workers never re-read the file or the flags)."""
    from dockyard import config as config_mod
    from dockyard.api.app import create_app
    from dockyard.logsetup import setup

    cfg = config_mod.loads(os.environ[SETTINGS_ENV])
    setup(cfg.log_level)
    return create_app(build_registry(cfg, migrate=False))


def serve(cfg: Config, settings: str) -> None:
    """Run the HTTP server; ``settings`` is ``config.dumps()`` of what ``cfg`` was parsed from."""
    import uvicorn

    from dockyard.api.app import create_app

    registry = build_registry(cfg)  # migrates once, before any worker starts
    host, port = cfg.host_port
    log.info("dockyard listening on http://%s:%d (database %s, storage %s)", host, port,
             cfg.effective_database_url.split("@")[-1], cfg.effective_storage_root)
    common = dict(host=host, port=port, log_level=cfg.log_level, access_log=False,
                  http="httptools", loop="uvloop", proxy_headers=False)
    if cfg.workers > 1:
        os.environ[SETTINGS_ENV] = settings
        uvicorn.run("dockyard.server:app_factory", factory=True, workers=cfg.workers, **common)
    else:
        uvicorn.run(create_app(registry), **common)

