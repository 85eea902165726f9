"""Building the running registry from settings: database, storage, app, HTTP server."""

from __future__ import annotations

import ipaddress
import logging
import os
import tempfile
from pathlib import Path

from dockyard.config import Config, ConfigError, split_listen
from dockyard.lifecycle.reserve import DiskReserve
from dockyard.meta.db import Database, is_database_error, safe_url
from dockyard.registry.context import Registry
from dockyard.registry.usage import UsageCollector
from dockyard.storage import open_driver

log = logging.getLogger(__name__)
# the parent's whole configuration, as config.dumps() wrote it, read back by every worker
SETTINGS_ENV = "DOCKYARD_SERVE_SETTINGS"


class StartupError(Exception):
    """``dockyard serve`` cannot start (a directory, the database): one line on stderr, exit 1.
    A setting with an unusable value is a :class:`ConfigError` (exit 2)."""


def is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback  # 127.0.0.0/8, ::1
    except ValueError:
        return False  # any other host name may resolve to anything


def check_exposure(cfg: Config) -> None:
    """Refuse an open registry beyond loopback unless the operator asked for one: without
    authentication the anonymous role defaults to admin, which is only safe on loopback."""
    host, _ = cfg.host_port
    if not is_loopback(host) and not cfg.auth_htpasswd and not cfg.tls_client_ca and not cfg.anonymous_role:
        raise ConfigError(
            f"refusing to listen on {cfg.listen} with no authentication: every client would be admin; "
            f"set auth_htpasswd (or tls_client_ca), or anonymous_role = \"admin\" for an open registry on purpose "
            f"(\"pull\" for a read-only one)")


def check_directory(path: Path, setting: str) -> None:
    """``path`` is (or can be made) a directory this process can write in."""
    if path.exists() and not path.is_dir():
        raise StartupError(f"{setting} {path} is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".dockyard-write-check-"):
            pass
    except OSError as exc:
        raise StartupError(f"{setting} {path} is not writable: {exc.strerror or exc}") from exc


def check_files(cfg: Config) -> None:
    if cfg.auth_htpasswd:
        try:
            Path(cfg.auth_htpasswd).read_bytes()
        except OSError as exc:
            raise ConfigError(f"auth_htpasswd {cfg.auth_htpasswd}: {exc.strerror or exc}") from exc


def tls_options(cfg: Config) -> dict:
    """uvicorn's TLS arguments; the files are loaded once here so that a bad one is one line."""
    import ssl

    if not cfg.tls_cert:
        return {}
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cfg.tls_cert, cfg.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls_cert {cfg.tls_cert} / tls_key {cfg.tls_key}: {exc.strerror or exc}") from exc
    options = {"ssl_certfile": cfg.tls_cert, "ssl_keyfile": cfg.tls_key}
    if cfg.tls_client_ca:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_verify_locations(cfg.tls_client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"tls_client_ca {cfg.tls_client_ca}: {exc.strerror or exc}") from exc
        options.update(ssl_ca_certs=cfg.tls_client_ca, ssl_cert_reqs=ssl.CERT_REQUIRED)
    return options


def preflight(cfg: Config) -> None:
    """Every start-up check that needs no database, before anything is bound or written."""
    check_exposure(cfg)
    check_files(cfg)
    tls_options(cfg)
    check_directory(cfg.data_path, "data_dir")
    if cfg.storage == "filesystem":
        check_directory(cfg.effective_storage_root, "storage_root")


def open_registry(cfg: Config) -> Registry:
    """:func:`build_registry` for ``dockyard serve``: a database that cannot be reached or
    migrated is a :class:`StartupError` naming it (password hidden), not a traceback."""
    try:
        return build_registry(cfg)
    except OSError as exc:  # the directory of a SQLite file
        raise StartupError(f"cannot use the database {safe_url(cfg.effective_database_url)}: {exc}") from exc
    except Exception as exc:
        if not is_database_error(exc):
            raise
        reason = getattr(exc, "reason", None) or str(getattr(exc, "orig", None) or exc)
        raise StartupError(f"cannot use the database {safe_url(cfg.effective_database_url)}: "
                           f"{reason.strip().splitlines()[0] if reason.strip() else type(exc).__name__}") from exc


def build_registry(cfg: Config, *, migrate: bool = True) -> Registry:
    cfg.data_path.mkdir(parents=True, exist_ok=True)
    db = Database(cfg.effective_database_url)
    if migrate:
        db.migrate()
    reserve = DiskReserve(cfg.data_path / "disk-reserve", cfg.disk_reserve)
    reserve.ensure()
    db.on_disk_full = reserve.release
    registry = Registry(config=cfg, db=db, storage=open_driver(cfg), reserve=reserve)
    registry.metrics.add_collector(UsageCollector(db))
    if cfg.cache_enabled:
        from dockyard.cache.setup import open_cache

        registry.cache = open_cache(cfg, registry.storage, registry.metrics)
    return registry


def metrics_directory(cfg: Config) -> Path:
    """The multiprocess metrics directory of this ``serve`` (``--workers N``):
    ``data_dir/metrics-PID``, made empty; directories that dead ``serve`` processes left are removed."""
    import shutil

    from dockyard.metrics import process_alive

    for old in cfg.data_path.glob("metrics-*"):
        pid = old.name.partition("-")[2]
        if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    path = cfg.data_path / f"metrics-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    return path


def start_metrics_listener(cfg: Config, metrics) -> None:
    """``metrics_listen``: a second listener (a thread of this process) answering every path
    with the metrics, without credentials. Off when the setting is empty."""
    from prometheus_client import start_http_server

    if not cfg.metrics_listen:
        return
    host, port = split_listen(cfg.metrics_listen)
    try:
        start_http_server(port, host, registry=metrics)
    except OSError as exc:
        raise StartupError(f"metrics_listen {cfg.metrics_listen}: {exc.strerror or exc}") from exc
    log.info("metrics on http://%s:%d/metrics (no credentials)", f"[{host}]" if ":" in host else host, port)


def _die_with_parent() -> None:
    """A worker ends when the process that started it does (Linux: PR_SET_PDEATHSIG), so a
    ``dockyard serve`` killed with SIGKILL leaves no worker behind serving on its port."""
    import ctypes
    import signal

    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: uvicorn's supervisor still stops its workers
        return
    if os.getppid() != parent:  # the parent died before the signal was armed
        os.kill(os.getpid(), signal.SIGTERM)


def app_factory():
    """uvicorn factory used by worker processes: the parent's settings, every one of them,
    from one JSON environment variable (workers never re-read the file or the flags)."""
    from dockyard import config as config_mod
    from dockyard.api.app import create_app
    from dockyard.logsetup import setup

    from dockyard.api.requestlog import RequestLog

    _die_with_parent()
    cfg = config_mod.loads(os.environ[SETTINGS_ENV])
    setup(cfg.log_level, cfg.log_format)
    registry = build_registry(cfg, migrate=False)
    return RequestLog(create_app(registry), registry.metrics)


def serve(cfg: Config, settings: str) -> None:
    """Run the HTTP server; ``settings`` is ``config.dumps()`` of what ``cfg`` was parsed from."""
    import shutil

    from dockyard.metrics import prepare_multiprocess

    preflight(cfg)
    multiproc = None
    if cfg.effective_workers > 1:  # one metrics registry for all workers: files they all write, any scrape reads
        multiproc = prepare_multiprocess(metrics_directory(cfg))
    try:
        _serve(cfg, settings)
    finally:
        if multiproc:
            shutil.rmtree(multiproc, ignore_errors=True)


def _serve(cfg: Config, settings: str) -> None:
    import uvicorn

    from dockyard.api.app import create_app
    from dockyard.api.requestlog import RequestLog

    registry = open_registry(cfg)  # migrates once, before any worker starts
    start_metrics_listener(cfg, registry.metrics)
    host, port = cfg.host_port
    tls = tls_options(cfg)
    workers = cfg.effective_workers
    log.info("dockyard listening on %s://%s:%d (database %s, storage %s, %d worker%s%s)", "https" if tls else "http",
             f"[{host}]" if ":" in host else host, port, safe_url(cfg.effective_database_url),
             cfg.effective_storage_root if cfg.storage == "filesystem" else cfg.storage,
             workers, "s" if workers > 1 else "", ", client certificates required" if cfg.tls_client_ca else "")
    # log_config=None: uvicorn's own lines go through dockyard's handler (one format, json too);
    # its access log is replaced by the request log
    common = dict(host=host, port=port, log_level=cfg.log_level, log_config=None, access_log=False,
                  http="httptools", loop="uvloop", proxy_headers=False, **tls)
    if workers > 1:
        os.environ[SETTINGS_ENV] = settings
        uvicorn.run("dockyard.server:app_factory", factory=True, workers=workers, **common)
    else:
        uvicorn.run(RequestLog(create_app(registry), registry.metrics), **common)

