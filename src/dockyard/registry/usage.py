"""Storage usage as metrics, computed at scrape time from the database and cached.

Totals (blobs, bytes, repositories, upload sessions: one aggregate per table) are read at most
every :data:`TOTALS_TTL` seconds, the largest repositories (a grouped join over every layer
link, whose cost grows with the store) at most every :data:`LARGEST_TTL` seconds, whatever the
scrape rate. A scrape while the database fails serves the last values (or none) and never
fails the whole endpoint.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from prometheus_client.core import GaugeMetricFamily

from dockyard.meta.db import Database, is_database_error
from dockyard.meta.usage import UsageStore
from dockyard.metrics import HELP

log = logging.getLogger(__name__)

TOP_REPOSITORIES = 20  # repositories with a dockyard_repository_bytes series
TOTALS_TTL = 30.0  # seconds
LARGEST_TTL = 300.0  # seconds


class _Cached:
    """One value read through ``read`` at most every ``ttl`` seconds; concurrent scrapes wait
    for the one that reads."""

    def __init__(self, read: Callable, ttl: float):
        self.read, self.ttl = read, ttl
        self.value = None
        self._at = float("-inf")
        self._lock = threading.Lock()

    def get(self):
        with self._lock:
            if time.monotonic() - self._at >= self.ttl:
                try:
                    self.value = self.read()
                except Exception as exc:  # the database failing must not fail the scrape; a bug must
                    if not is_database_error(exc):
                        raise
                    log.warning("storage usage metrics: database unavailable: %s", exc)
                self._at = time.monotonic()
            return self.value


class UsageCollector:
    def __init__(self, db: Database, *, top: int = TOP_REPOSITORIES, totals_ttl: float = TOTALS_TTL,
                 largest_ttl: float = LARGEST_TTL):
        self.db = db
        self.totals = _Cached(lambda: self._read(lambda store: store.totals()), totals_ttl)
        self.largest = _Cached(lambda: self._read(lambda store: store.largest(top)), largest_ttl)

    def _read(self, fn):
        with self.db.read() as conn:
            return fn(UsageStore(conn))

    def collect(self):
        totals = self.totals.get()
        if totals is not None:
            for name, value in (("dockyard_storage_blobs", totals.blobs), ("dockyard_storage_bytes", totals.blob_bytes),
                                ("dockyard_repositories", totals.repositories),
                                ("dockyard_upload_sessions", totals.uploads),
                                ("dockyard_upload_session_bytes", totals.upload_bytes)):
                yield GaugeMetricFamily(name, HELP[name][1], value=value)
        largest = self.largest.get()
        if largest is not None:
            family = GaugeMetricFamily("dockyard_repository_bytes", HELP["dockyard_repository_bytes"][1],
                                       labels=["repository"])
            for repository, size in largest:
                family.add_metric([repository], size)
            yield family
