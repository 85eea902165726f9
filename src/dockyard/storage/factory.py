"""Build the configured driver, wrapped in the key checks."""

from __future__ import annotations

from dockyard.config import Config, ConfigError
from dockyard.storage.base import StorageDriver
from dockyard.storage.checked import CheckedDriver


def open_driver(cfg: Config) -> StorageDriver:
    if cfg.storage == "filesystem":
        from dockyard.storage.filesystem import FilesystemDriver

        driver: StorageDriver = FilesystemDriver(cfg.effective_storage_root)
    elif cfg.storage == "s3":
        from dockyard.storage.s3 import S3Driver

        if not cfg.s3_bucket:
            raise ConfigError("storage = s3 needs s3_bucket")
        driver = S3Driver(cfg.s3_bucket, prefix=cfg.s3_prefix, endpoint_url=cfg.s3_endpoint_url,
                          region=cfg.s3_region, path_style=cfg.s3_path_style)
    else:
        raise ConfigError(f"unknown storage driver {cfg.storage!r}")
    if cfg.storage_latency > 0:
        from dockyard.storage.latency import LatencyDriver

        driver = LatencyDriver(driver, cfg.storage_latency)
    return CheckedDriver(driver)
