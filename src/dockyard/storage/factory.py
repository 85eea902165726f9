"""Build the configured driver, wrapped in the key checks."""

from __future__ import annotations

from dockyard.config import Config, ConfigError
from dockyard.storage.base import StorageDriver
from dockyard.storage.checked import CheckedDriver


def open_driver(cfg: Config) -> StorageDriver:
    if cfg.storage == "filesystem":
        from dockyard.storage.filesystem import FilesystemDriver

        driver: StorageDriver = FilesystemDriver(cfg.effective_storage_root)
    else:
        raise ConfigError(f"unknown storage driver {cfg.storage!r}")
    if cfg.storage_latency > 0:
        from dockyard.storage.latency import LatencyDriver

        driver = LatencyDriver(driver, cfg.storage_latency)
    return CheckedDriver(driver)
