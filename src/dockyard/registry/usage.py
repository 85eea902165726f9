"""Storage usage as metrics, computed at scrape time from the database and cached.

One bounded read (:class:`dockyard.meta.usage.UsageStore`) at most every ``ttl`` seconds,
whatever the scrape rate; a scrape while the database fails serves the last values (or none)
and never fails the whole endpoint.
"""

from __future__ import annotations

import logging
import threading
import time

from prometheus_client.core import GaugeMetricFamily

from dockyard.meta.db import Database, is_database_error
from dockyard.meta.usage import Usage, UsageStore
from dockyard.metrics import HELP

log = logging.getLogger(__name__)

TOP_REPOSITORIES = 20  # repositories with a dockyard_repository_bytes series
TTL = 30.0  # seconds a computed usage is served before the next scrape computes it again


class UsageCollector:
    def __init__(self, db: Database, *, ttl: float = TTL, top: int = TOP_REPOSITORIES):
        self.db, self.ttl, self.top = db, ttl, top
        self._usage: Usage | None = None
        self._at = float("-inf")
        self._lock = threading.Lock()

    def usage(self) -> Usage | None:
        with self._lock:  # one scrape computes, concurrent ones wait for its result
            if time.monotonic() - self._at >= self.ttl:
                try:
                    with self.db.read() as conn:
                        self._usage = UsageStore(conn).usage(self.top)
                except Exception as exc:  # the database failing must not fail the scrape; a bug must
                    if not is_database_error(exc):
                        raise
                    log.warning("storage usage metrics: database unavailable: %s", exc)
                self._at = time.monotonic()
            return self._usage

    def collect(self):
        usage = self.usage()
        if usage is None:
            return
        for name, value in (("dockyard_storage_blobs", usage.blobs), ("dockyard_storage_bytes", usage.blob_bytes),
                            ("dockyard_repositories", usage.repositories),
                            ("dockyard_upload_sessions", usage.uploads),
                            ("dockyard_upload_session_bytes", usage.upload_bytes)):
            yield GaugeMetricFamily(name, HELP[name][1], value=value)
        family = GaugeMetricFamily("dockyard_repository_bytes", HELP["dockyard_repository_bytes"][1],
                                   labels=["repository"])
        for repository, size in usage.largest:
            family.add_metric([repository], size)
        yield family
