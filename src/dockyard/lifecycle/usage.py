"""The usage job: records storage used (blobs, bytes, bytes referenced by repositories) as one
sample per run, keeping the newest ``usage_samples_kept``, and refreshes each repository's
figures that the dashboard sorts by. Reads in read transactions; each write is short (one
sample, or the figures of one batch of repositories), so pushes never wait behind a scan.
"""

from __future__ import annotations

import logging
import time

from dockyard.report import Report
from dockyard.meta.usage import RepoUsage, UsageStore

log = logging.getLogger(__name__)
BATCH = 500  # repositories per read and write


class UsageSampler:
    job = "usage"

    def __init__(self, reg, batch: int = BATCH):
        self.reg = reg
        self.batch = batch

    def run(self) -> Report:
        reg = self.reg
        report = Report(self.job)
        t0 = time.monotonic()
        now = reg.now()
        with reg.db.read() as conn:
            sample = UsageStore(conn).measure(now)
        with reg.db.write() as conn:
            UsageStore(conn).record(sample, reg.config.usage_samples_kept)
        after = 0
        while True:
            with reg.db.read() as conn:
                store = UsageStore(conn)
                ids = store.repository_ids_after(after, self.batch)
                if not ids:
                    break
                names = dict(store.names_of(ids))
                figures = store.usage_of(ids)
            with reg.db.write() as conn:
                UsageStore(conn).store_repository_usage(
                    [RepoUsage(i, names.get(i, ""), *figures[i]) for i in ids], now)
            report.kinds["repositories"].objects += len(ids)
            after = ids[-1]
        report.duration = time.monotonic() - t0
        log.debug("usage sample: %d blobs, %d bytes (%d referenced) in %.2fs", sample.blobs, sample.bytes,
                  sample.logical_bytes, report.duration)
        return report
