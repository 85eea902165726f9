"""The scrubber: purges pending_delete images whose scrub time has passed, drops deleted
tags past theirs (queueing a review of their images), then runs the collector so their
data goes too, in a pool of ``scrub_pool_size`` under the backend rate
limit.

Killed at any point it loses nothing: a purge is one transaction (the image is either
still pending or gone with its reviews queued), and the collector finishes whatever the
queues and tombstones hold on the next run. It is serialised with ``restore`` on the
manifest row: it claims images with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL) or inside an
exclusive write transaction (SQLite), and a restore locks the same row.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Callable

from dockyard.clock import Clock
from dockyard.lifecycle.collector import Collector, GcOptions
from dockyard.lifecycle.purge import purge_manifests
from dockyard.lifecycle.ratelimit import WindowLimiter
from dockyard.report import Report
from dockyard.meta.db import Database, retrying
from dockyard.meta.events import EventStore
from dockyard.meta.manifests import PurgeTarget
from dockyard.meta.stores import Stores
from dockyard.meta.schema import PENDING_DELETE
from dockyard.meta.trash import TrashStore
from dockyard.metrics import Metrics
from dockyard.storage.base import Deleter

log = logging.getLogger(__name__)


def kept_children(q: Stores, targets: list[PurgeTarget], now: float, recheck: float) -> dict[int, float]:
    """Those ``targets`` that a manifest outside the batch still references as a child (an
    index that is live, or pending and restorable: its restore needs the child), with the
    time to look at them again: the latest scrub time of their pending parents, and
    ``now + recheck`` while a live one references them. Purging a child under such an index
    would leave it unrestorable (or broken). A parent kept itself keeps its children."""
    parents = q.manifests.parents_of([(t.repository_id, t.digest) for t in targets])
    purging = {t.id for t in targets}
    kept: dict[int, float] = {}
    changed = True
    while changed:  # nested indexes: a kept parent keeps its children too
        changed = False
        for t in targets:
            if t.id in kept:
                continue
            holders = [p for p in parents.get((t.repository_id, t.digest), ())
                       if p.id != t.id and (p.id not in purging or p.id in kept)]
            if holders:
                later = max(p.scrub_after if p.state == PENDING_DELETE and p.scrub_after else now + recheck
                            for p in holders)
                later = max([later, *(kept[p.id] for p in holders if p.id in kept)])
                kept[t.id] = max(later, now + 1.0)
                changed = True
    return kept


class Scrubber:
    job = "scrub"

    def __init__(self, db: Database, storage: Deleter, clock: Clock, opts: GcOptions,
                 metrics: Metrics | None = None, progress: Callable[[Report], None] | None = None,
                 limiter: WindowLimiter | None = None):
        self.db, self.storage, self.clock, self.opts = db, storage, clock, opts
        self.metrics = metrics or Metrics()
        self.metrics.inc("dockyard_scrub_images_total", 0)  # the series exist from the first run on
        self.metrics.inc("dockyard_scrub_runs_total", 0)
        self.progress = progress
        self.limiter = limiter or WindowLimiter(opts.max_deletes_per_second)

    @classmethod
    def for_registry(cls, reg, progress=None, **overrides) -> "Scrubber":
        opts = GcOptions.from_config(reg.config, workers=reg.config.scrub_pool_size, **overrides)
        return cls(reg.db, reg.storage, reg.clock, opts, metrics=reg.metrics, progress=progress)

    def run(self) -> Report:
        report = Report(self.job, dry_run=self.opts.dry_run, started=self.clock.now())
        t0 = time.monotonic()
        if self.opts.dry_run:
            self._preview(report)
        else:
            # each batch is one transaction, run again if it loses a deadlock (it reports only
            # after its commit)
            while retrying(self._purge_batch, report):
                if self.progress:
                    self.progress(report)
            while expired := retrying(self._expire_tags, report):
                if expired < self.opts.batch_size:
                    break
            collector = Collector(self.db, self.storage, self.clock, self.opts, metrics=self.metrics,
                                  progress=lambda r: self.progress and self.progress(_combined(report, r)),
                                  limiter=self.limiter)
            report.merge(collector.run())
        report.duration = time.monotonic() - t0
        self._record(report)
        return report

    def _purge_batch(self, report: Report) -> int:
        now = self.clock.now()
        with self.db.write() as conn:
            q = Stores(conn)
            claimed = q.manifests.claim_due_pending(now, self.opts.batch_size)
            deferred = kept_children(q, claimed, now, self.opts.gc_delay)
            q.manifests.defer_pending(deferred)
            targets = [t for t in claimed if t.id not in deferred]
            # the links get the usual gc_delay: a push that saw a layer exist a moment ago
            # (HEAD, then manifest PUT) must still find it linked
            purge_manifests(conn, targets, now, self.opts.purge, actor="scrubber")
            if targets:
                EventStore(conn).record("purge", None, {"images": [{"repository_id": t.repository_id,
                                                                    "digest": t.digest} for t in targets]},
                                        now, "scrubber")
        for t in targets:
            report.add("images")
            log.info("scrub: purged %s from repository %d", t.digest, t.repository_id)
        for t in claimed:
            if t.id in deferred:
                log.info("scrub: kept %s of repository %d until %.0f: an index that can still be restored "
                         "references it", t.digest, t.repository_id, deferred[t.id])
        self.metrics.inc("dockyard_scrub_images_total", len(targets))
        return len(claimed)

    def _expire_tags(self, report: Report) -> int:
        """Drop a batch of deleted tags past their scrub time. Each kept its image from the
        collector (it could be restored): the image is reviewed now, in the same transaction."""
        now = self.clock.now()
        with self.db.write() as conn:
            manifest_ids = TrashStore(conn).expire(now, self.opts.batch_size)
            Stores(conn).reviews.add_manifests(manifest_ids, now, "tag_expired")
        for _ in manifest_ids:
            report.add("tags")
        return len(manifest_ids)

    def _preview(self, report: Report) -> None:
        now = self.clock.now()
        with self.db.read() as conn:
            trash = TrashStore(conn)
            due = [i for i in trash.images(limit=1_000_000) if i.scrub_after <= now]
            kept = kept_children(Stores(conn), [PurgeTarget(i.manifest_id, i.repository_id, i.digest)
                                                    for i in due], now, self.opts.gc_delay)
            for image in due:
                if image.manifest_id not in kept:
                    report.add("images", image.bytes_freed, {"repository": image.repository, "digest": image.digest,
                                                             "tags": image.tags})
            for tag in trash.tags(limit=1_000_000):
                if tag.scrub_after <= now:
                    report.add("tags", 0, {"repository": tag.repository, "tag": tag.tag})
        report.merge(Collector(self.db, self.storage, self.clock, replace(self.opts, dry_run=True),
                               metrics=Metrics()).run())

    def _record(self, report: Report) -> None:
        data = report.as_dict()
        data.pop("items", None)
        if report.dry_run or data["totals"]["objects"] or data["totals"]["failures"]:
            with self.db.write() as conn:
                Stores(conn).runs.record(self.job, report.started, self.clock.now(), report.dry_run, "", data)
        self.metrics.inc("dockyard_scrub_runs_total")


def _combined(outer: Report, inner: Report) -> Report:
    merged = Report(outer.job, outer.dry_run, outer.started)
    merged.merge(outer)
    merged.merge(inner)
    return merged
