"""Pull times, tracked cheaply: a pull notes the time in memory; a background flush writes
them in one batched statement (never a database write per pull)."""

from __future__ import annotations

import threading

from dockyard.meta.db import Database
from dockyard.meta.retention import RetentionStore


class PullTracker:
    def __init__(self) -> None:
        self._pending: dict[int, float] = {}
        self._lock = threading.Lock()

    def record(self, manifest_id: int, when: float) -> None:
        with self._lock:
            self._pending[manifest_id] = when

    def flush(self, db: Database) -> int:
        with self._lock:
            pending, self._pending = self._pending, {}
        if pending:
            with db.write() as conn:
                RetentionStore(conn).record_pulls(pending)
        return len(pending)
