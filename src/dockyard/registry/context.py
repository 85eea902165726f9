"""Everything the registry's operations need, built once and passed in."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dockyard.clock import Clock, SystemClock
from dockyard.config import Config
from dockyard.lifecycle.reserve import DiskReserve
from dockyard.meta.db import Database
from dockyard.metrics import Metrics
from dockyard.registry.pulls import PullTracker
from dockyard.storage.base import StorageDriver

if TYPE_CHECKING:  # the cache's modules load only where a cache is configured (server.build_registry)
    from dockyard.cache.blobcache import BlobCache


class HasherCache:
    """sha256 state of upload sessions this process has been streaming.

    hashlib state cannot be stored, so a chunked upload whose chunks all reach
    this process is hashed once, as it streams; otherwise the staged data is
    hashed again when the upload is finished. Bounded; the oldest entries go.
    """

    def __init__(self, capacity: int = 4096):
        self.capacity = capacity
        self._items: OrderedDict[str, tuple[int, "hashlib._Hash"]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, upload_id: str, offset: int) -> "hashlib._Hash | None":
        """The hasher of ``upload_id`` if it has consumed exactly ``offset`` bytes (removed from the cache)."""
        with self._lock:
            item = self._items.pop(upload_id, None)
        if item is None:
            return hashlib.sha256() if offset == 0 else None
        return item[1] if item[0] == offset else None

    def put(self, upload_id: str, offset: int, hasher: "hashlib._Hash") -> None:
        with self._lock:
            self._items[upload_id] = (offset, hasher)
            self._items.move_to_end(upload_id)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def drop(self, upload_id: str) -> None:
        with self._lock:
            self._items.pop(upload_id, None)


@dataclass
class Registry:
    config: Config
    db: Database
    storage: StorageDriver
    clock: Clock = field(default_factory=SystemClock)
    hashers: HasherCache = field(default_factory=HasherCache)
    metrics: Metrics = field(default_factory=Metrics)
    pulls: "PullTracker" = field(default_factory=lambda: PullTracker())
    reserve: DiskReserve | None = None
    """The disk reserve of ``dockyard serve`` (None: none kept, e.g. in-process tests)."""
    cache: BlobCache | None = None
    """This replica's read-through blob cache (``storage = "s3"`` with ``cache_max_size`` > 0)."""

    def now(self) -> float:
        return self.clock.now()
