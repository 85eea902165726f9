"""Build a replica's blob cache from settings, in front of a storage driver."""

from __future__ import annotations

from dockyard.cache import maintenance
from dockyard.cache.blobcache import BlobCache
from dockyard.meta.prefetchqueue import PrefetchQueue
from dockyard.config import Config
from dockyard.metrics import Metrics
from dockyard.storage import paths
from dockyard.storage.base import StorageDriver


def open_cache(cfg: Config, storage: StorageDriver, metrics: Metrics) -> BlobCache:
    def backend(digest: str, offset: int, length: int | None):
        return storage.read(paths.blob_key(digest), offset, length)

    cache = BlobCache(cfg.effective_cache_dir, backend, max_size=cfg.cache_max_size,
                      high=cfg.cache_high_watermark, low=cfg.cache_low_watermark, metrics=metrics)
    maintenance.recover(cache)
    queue = PrefetchQueue(cache.index)

    def range_miss(digest: str) -> None:  # fill it in the background
        queue.put(digest, False, cache.now())
        cache.wakeup.set()

    cache.on_range_miss = range_miss
    return cache
