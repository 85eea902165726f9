"""A wrapper that adds a fixed latency to every storage call, as an object store would.

For benchmarks and tests (setting ``storage_latency``); it counts calls per operation too.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Iterable, Iterator

from dockyard.storage.base import ObjectInfo, StorageDriver, StorageError


class LatencyDriver:
    def __init__(self, inner: StorageDriver, latency: float):
        self.inner = inner
        self.name = inner.name
        self.latency = latency
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _wait(self, op: str) -> None:
        with self._lock:
            self.calls[op] += 1
        if self.latency > 0:
            time.sleep(self.latency)

    def write_at(self, key: str, offset: int, chunks: Iterable[bytes]) -> int:
        self._wait("write_at")
        return self.inner.write_at(key, offset, chunks)

    def move(self, src: str, dst: str) -> None:
        self._wait("move")
        self.inner.move(src, dst)

    def read(self, key: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        self._wait("read")
        return self.inner.read(key, offset, length)

    def stat(self, key: str) -> ObjectInfo | None:
        self._wait("stat")
        return self.inner.stat(key)

    def delete(self, key: str) -> None:
        self._wait("delete")
        self.inner.delete(key)

    def delete_many(self, keys: Iterable[str]) -> dict[str, StorageError | None]:
        self._wait("delete_many")  # one round trip per call, as a store's batch delete
        return self.inner.delete_many(keys)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        self._wait("list")
        return self.inner.list(prefix)

    def local_path(self, key: str) -> str | None:
        return self.inner.local_path(key)

    def redirect_url(self, key: str, ttl: int) -> str | None:
        make = getattr(self.inner, "redirect_url", None)
        return make(key, ttl) if make else None
