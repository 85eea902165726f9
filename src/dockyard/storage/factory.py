"""Build the configured driver, wrapped in the key checks."""

from __future__ import annotations

from dockyard.config import Config, ConfigError
from dockyard.storage.base import StorageDriver
from dockyard.storage.checked import CheckedDriver


def open_driver(cfg: Config) -> StorageDriver:
    if cfg.storage == "filesystem":
        from dockyard.storage.filesystem import FilesystemDriver

        return CheckedDriver(FilesystemDriver(cfg.effective_storage_root))
    raise ConfigError(f"unknown storage driver {cfg.storage!r}")
