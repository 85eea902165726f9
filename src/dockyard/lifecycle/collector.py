"""The online garbage collector.

One :meth:`Collector.step` takes a batch of due entries from each review queue and,
for each, re-checks under lock that the object is still unreferenced; if so it removes
the row (and, for blobs and uploads, writes a tombstone) in the same transaction.
Then it deletes the data of claimed tombstones through the :class:`DeletePool` and
drops each tombstone once its data is gone. A crash at any point leaves either
review entries or tombstones, which the next run finishes.

Order of the queues in a step: manifests -> links -> blobs -> repositories, so a purge
cascades through a whole run (a purged manifest's links, then their blobs).

Eligibility, re-checked under lock:
- manifest: active, pushed more than ``gc_delay`` ago, no tag, not the child of any
  manifest of its repository; with a subject: collected once the subject is gone
  (``referrers_follow_subject``); without: only with ``delete_untagged``.
- link: no manifest of the repository (in any state: pending ones can be restored)
  references the blob, and the link is older than ``gc_delay``.
- blob: ready (or committing and abandoned for longer than ``upload_ttl``), no manifest
  references it and no repository links it.
- repository: no tags, manifests, links or uploads.
- upload: idle longer than ``upload_ttl``.

With ``sweep_untagged`` (``gc --delete-untagged``) a run first queues a review for every
untagged active manifest that has none (keyset pages, one transaction each): manifests
untagged while ``delete_untagged`` was off were never queued. The reviews then decide as
above.

A dry run evaluates the same checks in a read-only transaction and deletes nothing.

A shorter grace for one run (``dockyard gc --grace 10m``, for a full disk): the run treats
``gc_delay`` as ``grace``. It claims review entries due within ``gc_delay - grace`` from now
(every entry was queued ``gc_delay`` after the event that made it, so this is "``grace``
after that event"), judges age by ``grace`` (a manifest pushed, a layer linked or a
blob's existence confirmed to a pushing client within ``grace`` stays), and schedules the
reviews it creates ``grace`` ahead. What it never shortens: upload sessions and committing
blobs keep ``upload_ttl``, and a push that commits a blob whose row this run removed still
cancels (or waits for) its tombstone. A young entry goes back ``gc_delay`` after its event,
beyond this run's horizon, so the run ends. The one risk: a push whose manifest comes
more than ``grace`` after one of its layers loses that layer (the manifest PUT gets a clean
MANIFEST_BLOB_UNKNOWN and the client pushes again), hence the floor :data:`MIN_GRACE`.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field, replace
from functools import partial
from types import SimpleNamespace
from typing import Callable, Mapping

from dockyard import faults
from dockyard.clock import Clock
from dockyard.lifecycle import quotas
from dockyard.lifecycle.deleter import DeletePool, DeleteResult, InFlight
from dockyard.lifecycle.purge import PurgeOptions, purge_manifests
from dockyard.lifecycle.ratelimit import WindowLimiter
from dockyard.logsetup import log_each
from dockyard.report import Report
from dockyard.meta.db import Database, retrying
from dockyard.meta.events import EventStore
from dockyard.meta.blobs import BlobRow
from dockyard.meta.manifests import PurgeTarget
from dockyard.meta.stores import Stores
from dockyard.meta.repositories import RepositoryStore
from dockyard.meta.schema import ACTIVE, COMMITTING
from dockyard.meta.tombstones import Tombstone
from dockyard.metrics import Metrics
from dockyard.storage import paths
from dockyard.storage.base import Deleter
from dockyard.values import ConfigError

log = logging.getLogger(__name__)

KIND_OF_TOMBSTONE = {"blob": "blobs", "upload": "uploads"}

MIN_GRACE = 300.0
"""The shortest ``--grace`` a run accepts (5 minutes): the time a client may take between
uploading (or checking) a layer and pushing the manifest that references it. It is well
above the upload claim lease (60 s), the collector's lease (60 s) and a push's tombstone
wait (90 s), so no step of a single request depends on it."""


@dataclass(frozen=True)
class GcOptions:
    gc_delay: float = 3600.0
    upload_ttl: float = 86400.0
    delete_untagged: bool = False
    referrers_follow_subject: bool = True
    batch_size: int = 200
    batch_max: int = 2000
    """The most review entries one transaction of a run takes: a run that keeps finding full
    batches due (a backlog) doubles its batches from ``batch_size`` up to this while a
    transaction holds the writer's turn for under half of ``batch_seconds``, and shrinks
    them when one holds it longer than that (fewer, larger transactions: each index page a
    batch touches is written once per commit, not once per 200 entries)."""
    batch_seconds: float = 0.1
    """The longest a review transaction should hold the database's writer's turn, which
    pushes wait for (on SQLite: one writer at a time)."""
    workers: int = 4
    max_deletes_per_second: float = 0.0
    dry_run: bool = False
    sweep_untagged: bool = False
    """Before collecting, queue a review of every untagged active manifest that has none
    (``gc --delete-untagged``): images untagged while ``delete_untagged`` was off got none."""
    lease: float = 60.0
    retry_base: float = 5.0
    retry_max: float = 3600.0
    grace: float | None = None
    """This run's grace instead of ``gc_delay`` (shorter only, at least :data:`MIN_GRACE`)."""

    def __post_init__(self):
        if self.grace is not None:
            if self.grace < MIN_GRACE:
                raise ConfigError(f"a grace below {MIN_GRACE / 60:.0f} minutes is refused: a push whose manifest "
                                  "comes later than the grace after its layers would lose them")
            if self.grace > self.gc_delay:
                raise ConfigError(f"--grace longer than gc_delay ({self.gc_delay:.0f}s) would collect nothing "
                                  "sooner; leave it out")

    @property
    def grace_period(self) -> float:
        """The age below which nothing is collected: ``grace`` if given, else ``gc_delay``."""
        return self.gc_delay if self.grace is None else self.grace

    @property
    def horizon(self) -> float:
        """How far ahead of now review entries are claimed (0 without ``grace``)."""
        return self.gc_delay - self.grace_period
    quotas: Mapping = field(default_factory=dict)
    """The configured storage quotas (those of the admin API are read from the database)."""

    @classmethod
    def from_config(cls, cfg, **overrides) -> "GcOptions":
        opts = cls(gc_delay=cfg.gc_delay, upload_ttl=cfg.upload_ttl, delete_untagged=cfg.delete_untagged,
                   referrers_follow_subject=cfg.referrers_follow_subject, batch_size=cfg.gc_batch_size,
                   workers=cfg.gc_workers, max_deletes_per_second=cfg.gc_max_deletes_per_second,
                   quotas=cfg.quotas)
        return replace(opts, **overrides)

    @property
    def purge(self) -> PurgeOptions:
        return PurgeOptions(self.grace_period, self.delete_untagged, self.referrers_follow_subject)


def _process_alive(owner: str) -> bool:
    """Is the process named in a lease (``host:pid``) of this host still running?"""
    try:
        os.kill(int(owner.split(":")[1]), 0)
    except (IndexError, ValueError):
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def collectable_manifests(q: Stores, rows: list, opts: GcOptions) -> list:
    """Those of the active manifest ``rows`` that nothing keeps (age aside): no tag, live or
    in the trash; not the child of a manifest of its repository (in any state); a referrer
    whose subject is gone (``referrers_follow_subject``), or untagged with ``delete_untagged``.
    Set-based: three queries for the whole batch."""
    tagged = q.manifests.kept_by_tags([m.id for m in rows])
    children = q.manifests.referenced_among([(m.repository_id, m.digest) for m in rows], "manifest")
    subjects = q.manifests.existing([(m.repository_id, m.subject_digest) for m in rows if m.subject_digest])
    out = []
    for m in rows:
        if m.id in tagged or (m.repository_id, m.digest) in children:
            continue
        if m.subject_digest:
            if (m.repository_id, m.subject_digest) in subjects or not opts.referrers_follow_subject:
                continue
        elif not opts.delete_untagged:
            continue
        out.append(m)
    return out


class Collector:
    job = "gc"

    def __init__(self, db: Database, storage: Deleter, clock: Clock, opts: GcOptions,
                 metrics: Metrics | None = None, progress: Callable[[Report], None] | None = None,
                 limiter: WindowLimiter | None = None):
        self.db = db
        self.storage = storage
        self.clock = clock
        self.opts = opts
        self.metrics = metrics or Metrics()
        for kind in ("manifests", "links", "repositories", "blobs", "uploads", "tombstones"):  # series from 0 on
            self.metrics.inc("dockyard_gc_reclaimed_objects_total", 0, kind=kind)
        for kind in ("blobs", "uploads", "tombstones"):
            self.metrics.inc("dockyard_gc_reclaimed_bytes_total", 0, kind=kind)
            self.metrics.inc("dockyard_gc_failures_total", 0, kind=kind)
        self.progress = progress
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.limiter = limiter or WindowLimiter(opts.max_deletes_per_second)
        self._pool: DeletePool | None = None
        self._inflight: InFlight | None = None  # the storage deletes of the last claimed tombstones
        self._leased: list[Tombstone] = []  # written already leased to this collector, committed, not yet sent
        self._leasing: list[Tombstone] = []  # the same, in the transaction under way
        self._in_run = False  # inside run()'s loop of steps
        self._check_uploads = True  # look for stale uploads and abandoned commits at the next step
        self._batches: dict[str, int] = {}  # per queue: the batch a run's next transaction takes

    @classmethod
    def for_registry(cls, reg, progress=None, **overrides) -> "Collector":
        return cls(reg.db, reg.storage, reg.clock, GcOptions.from_config(reg.config, **overrides),
                   metrics=reg.metrics, progress=progress)

    # ---- public --------------------------------------------------------------
    def run(self, max_steps: int | None = None) -> Report:
        """Collect until nothing is due (or ``max_steps``), record the run, return its report."""
        report = Report(self.job, dry_run=self.opts.dry_run, started=self.clock.now())
        t0 = time.monotonic()
        self._leased = []
        try:
            if self.opts.dry_run:
                self._dry_run(report)
            else:
                with self.db.write() as conn:  # a killed collector of this host: take its work over now
                    Stores(conn).tombstones.release_leases_of_dead(socket.gethostname(), _process_alive, self.clock.now())
                if self.opts.sweep_untagged:
                    self._sweep_untagged(self.clock.now())
                steps = 0
                self._in_run = True
                while self.step(report) and (max_steps is None or (steps := steps + 1) < max_steps):
                    pass
                self._settle_inflight(report)
        finally:
            self._in_run, self._check_uploads = False, True
            self._batches = {}
            self._leased = []  # left by a failed step: their leases expire (or die with this process)
            report.duration = time.monotonic() - t0
            if self._pool:
                self._pool.close()
                self._pool = None
        self._finish(report)
        return report

    def step(self, report: Report) -> int:
        """One bounded unit of work: a batch from every queue, then a batch of storage deletes."""
        now = self.clock.now()
        with self.db.read() as conn:
            due = Stores(conn).reviews.due_work(now + self.opts.horizon, now - self.opts.upload_ttl,
                                                uploads=self._check_uploads)
        done = 0
        if due & {"uploads", "commits"}:
            done += self._retrying(self._uploads, report, now)
        elif self._in_run:
            # none stale at this run's first step: the rest of the run does not look again (the
            # committing-blobs check reads every blob row; one that goes stale meanwhile waits
            # for the next run, as it would have had it gone stale a moment after this one)
            self._check_uploads = False
        for name, review in (("manifests", self._review_manifests), ("links", self._review_links),
                             ("blobs", self._review_blobs), ("repositories", self._review_repositories)):
            # an earlier queue of this step may have made entries of a later one due
            if name in due or done:
                done += self._retrying(partial(self._queue, name, review), report, now)
        if "tombstones" in due or done or self._inflight is not None or self._leased:
            done += self._tombstones(report, now)
        if self.progress:
            self.progress(report)
        return done

    @staticmethod
    def _retrying(unit: Callable, report: Report, now: float) -> int:
        """Run one transaction of a step again if it loses a deadlock to a push or another
        collector (it was rolled back: nothing of it happened); what it reports counts once."""
        def attempt() -> tuple[int, Report]:
            scratch = Report(report.job, dry_run=report.dry_run)
            return unit(scratch, now), scratch

        done, scratch = retrying(attempt)
        report.merge(scratch)
        return done

    def waiting(self) -> dict[str, tuple[int, float]]:
        """Per queue: entries still in their grace (this run's) and when the first is due."""
        shift = self.opts.horizon
        with self.db.read() as conn:
            found = Stores(conn).reviews.waiting(self.clock.now() + shift)
        return {name: (n, first - shift) for name, (n, first) in found.items()}

    def summary(self, report: Report) -> dict:
        """A run's report with what still waits for its grace: what ``dockyard gc`` prints
        and ``POST /admin/v1/gc`` answers (one dict for both)."""
        now = self.clock.now()
        return {**report.as_dict(),
                "grace": {"seconds": self.opts.grace_period, "from": "gc_delay" if self.opts.grace is None else "--grace"},
                "waiting": {q: {"entries": n, "first_due_in_seconds": round(first - now, 1)}
                            for q, (n, first) in self.waiting().items()}}

    def backlog(self) -> dict:
        with self.db.read() as conn:
            return Stores(conn).reviews.backlog(self.clock.now())

    def _sweep_untagged(self, now: float) -> None:
        """Queue a review (due now) for each untagged manifest without one, a batch per
        transaction; the manifest queue then decides as for any other review."""
        last = 0
        while True:
            with self.db.write() as conn:
                q = Stores(conn)
                ids = q.reviews.untagged_unreviewed_manifests(last, self.opts.batch_size)
                q.reviews.add_manifests(ids, now, "swept")
            if not ids:
                return
            last = ids[-1]

    # ---- review queues (each handler is set-based over a batch) ------------------
    def _queue(self, name: str, review: Callable, report: Report, now: float) -> int:
        self._leasing = []
        limit = self._batches.get(name, self.opts.batch_size)
        with self.db.write(sync=False) as conn:
            began = time.perf_counter()  # the writer's turn, which pushes wait for, from BEGIN
            q = Stores(conn)
            entries = q.reviews.take_due(name, now + self.opts.horizon, limit)
            if entries:
                review(conn, q, entries, report, now)
        held = time.perf_counter() - began  # to COMMIT
        self.db.sync()  # on disk before anything it removed is deleted (what write() waits for)
        self._leased += self._leasing  # committed: this step's tombstone phase sends them
        self._leasing = []
        if self._in_run:
            self._batches[name] = self._next_batch(limit, len(entries), held)
        return len(entries)

    def _next_batch(self, limit: int, taken: int, held: float) -> int:
        """The batch of a queue's next transaction in this run: doubled after a full batch
        that held the writer's turn under half of ``batch_seconds`` (up to ``batch_max``),
        cut to fit ``batch_seconds`` after one that held it longer (not below ``batch_size``)."""
        target, floor = self.opts.batch_seconds, self.opts.batch_size
        ceiling = max(floor, self.opts.batch_max)
        if held > target:
            return max(floor, min(limit, int(limit * target / held)))
        if taken >= limit and held < target / 2:
            return min(ceiling, limit * 2)
        return limit

    def _review_manifests(self, conn, q: Stores, entries, report: Report, now: float, *,
                          apply: bool = True) -> None:
        rows = [m for m in q.manifests.for_review([e.manifest_id for e in entries], lock=apply)
                if m.state == ACTIVE]
        delay = self.opts.grace_period
        young = [m for m in rows if m.pushed_at > now - delay]
        if apply:  # back gc_delay after the push: beyond a shorter grace's horizon
            for m in young:
                q.reviews.add_manifests([m.id], m.pushed_at + self.opts.gc_delay, "young")
        rest = [m for m in rows if m.pushed_at <= now - delay]
        targets = []
        for m in collectable_manifests(q, rest, self.opts):
            targets.append(PurgeTarget(m.id, m.repository_id, m.digest))
            report.add("manifests", m.size, {"repository_id": m.repository_id, "digest": m.digest})
        if apply and targets:
            faults.point("collector.manifests_checked")  # locked, re-checked, about to purge
            purge_manifests(conn, targets, now, self.opts.purge)
            log_each(log, logging.INFO, [f"gc: purged untagged manifest {t.digest} (repository {t.repository_id})"
                                         for t in targets])
            self.metrics.inc("dockyard_gc_reclaimed_objects_total", len(targets), kind="manifests")

    def _review_links(self, conn, q: Stores, entries, report: Report, now: float, *, apply: bool = True) -> None:
        pairs = [(e.repository_id, e.digest) for e in entries]
        rows: dict[str, BlobRow] = {}
        if apply:
            faults.point("collector.links_claimed")  # review rows claimed, blob rows not yet locked
            rows = q.blobs.lock_many([d for _, d in pairs])
            faults.point("collector.links_locked")
        links = q.blobs.links_of(pairs)
        needed = q.manifests.referenced_among(list(links), "blob")
        delay = self.opts.grace_period
        remove = []
        for pair, created in sorted(links.items()):
            if pair in needed:
                continue
            if created > now - delay:
                if apply:
                    q.reviews.add_link_pairs([pair], created + self.opts.gc_delay, "young")
                continue
            remove.append(pair)
            report.add("links", 0, {"repository_id": pair[0], "digest": pair[1]})
        if apply and remove:
            q.blobs.delete_links(remove)
            quotas.credit(conn, self.opts.quotas, remove, now)
            # a repository this emptied is reviewed (one that still holds something is reviewed
            # again by whatever removes its last tag, manifest, link or upload)
            repo_ids = {r for r, _ in remove}
            q.reviews.add_repositories(sorted(repo_ids - q.repositories.nonempty(repo_ids)), now)
            self._review_unlinked(q, sorted({d for _, d in remove}), rows, now)
            log_each(log, logging.INFO, [f"gc: removed layer link {d} from repository {r}" for r, d in remove])
            self.metrics.inc("dockyard_gc_reclaimed_objects_total", len(remove), kind="links")

    def _review_unlinked(self, q: Stores, digests: list[str], rows: dict[str, BlobRow], now: float) -> None:
        """The blob review of the blobs whose links this transaction removed, at once: what
        queueing a review due now and taking it in the next transaction did, without the
        queue's rows (the blob rows are locked since the links were). A blob whose pending
        review is due later (beyond this run's horizon) keeps it: that review decides, as the
        later of two reviews always does."""
        later = q.reviews.blobs_due_after(digests, now + self.opts.horizon)
        self._remove_blobs(q, {d: rows[d] for d in digests if d in rows and d not in later}, now)

    def _review_blobs(self, conn, q: Stores, entries, report: Report, now: float, *, apply: bool = True) -> None:
        rows = q.blobs.lock_many([e.digest for e in entries], lock=apply)
        referenced = q.blobs.referenced(list(rows))
        stale = now - self.opts.upload_ttl
        eligible = [r for d, r in sorted(rows.items())
                    if d not in referenced and (r.state != COMMITTING or r.created_at < stale)]
        if not apply:
            for r in eligible:
                report.add("blobs", r.size, {"digest": r.digest})
            return
        self._remove_blobs(q, rows, now, referenced)

    def _remove_blobs(self, q: Stores, rows: dict[str, BlobRow], now: float, referenced: set[str] | None = None
                      ) -> None:
        """Remove those of the locked blob ``rows`` that nothing references (a committing one
        only once abandoned) and write their tombstones. Without a delete rate limit the
        tombstones are written already leased to this collector, which sends their deletes
        in this step's tombstone phase (no claim of its own: one write less per blob)."""
        if not rows:
            return
        if referenced is None:
            referenced = q.blobs.referenced(list(rows))
        stale = now - self.opts.upload_ttl
        eligible = [r for d, r in sorted(rows.items())
                    if d not in referenced and (r.state != COMMITTING or r.created_at < stale)]
        if not eligible:
            return
        q.blobs.delete_rows([r.digest for r in eligible])
        tombstones = [{"key": paths.blob_key(r.digest), "kind": "blob", "digest": r.digest, "size": r.size,
                       "created_at": now, "next_attempt_at": now} for r in eligible]
        if self.opts.max_deletes_per_second > 0:
            q.tombstones.add(tombstones)
        else:
            self._leasing += q.tombstones.add_leased(tombstones, self.owner, now + self.opts.lease)

    def _review_repositories(self, conn, q: Stores, entries, report: Report, now: float, *,
                             apply: bool = True) -> None:
        repos = RepositoryStore(conn).by_ids([e.repository_id for e in entries], lock=apply)
        busy = q.repositories.nonempty(list(repos))
        for repo_id, repo in sorted(repos.items()):
            if repo_id in busy:
                continue
            report.add("repositories", 0, {"repository": repo.name})
            if apply:
                q.repositories.delete(repo_id)
                log.info("gc: removed empty repository %s", repo.name)
                self.metrics.inc("dockyard_gc_reclaimed_objects_total", kind="repositories")

    def _uploads(self, report: Report, now: float) -> int:
        with self.db.write() as conn:
            q = Stores(conn)
            stale = q.uploads.stale(now - self.opts.upload_ttl, self.opts.batch_size)
            for up in stale:
                q.uploads.delete(up.id)
            q.reviews.add_repositories([up.repository_id for up in stale], now + self.opts.grace_period)
            q.tombstones.add([{"key": paths.upload_key(up.id), "kind": "upload", "digest": None, "size": up.size,
                               "created_at": now, "next_attempt_at": now} for up in stale])
            for digest in q.blobs.abandoned_commits(now - self.opts.upload_ttl, self.opts.batch_size):
                q.reviews.add_blobs([digest], now, "abandoned_commit")
        return len(stale)

    # ---- storage deletes -----------------------------------------------------------
    def _tombstones(self, report: Report, now: float) -> int:
        """Settle the deletes the previous step started, claim due tombstones and start deleting
        their data (batches of ``delete_many`` over the worker pool, see :class:`DeletePool`)
        without waiting: the storage round trips overlap the next step's reviews. The
        tombstones this step's reviews wrote already leased (:meth:`_remove_blobs`) are sent
        with them. One step's deletes at most are in flight, under their leases; ``run``
        settles the last ones. Settling and claiming are one transaction."""
        results = self._wait_inflight()
        # sent within half the lease (on the clock the lease is kept on): the other half covers the call
        deadline = now + self.opts.lease / 2
        expired = lambda: self.clock.now() > deadline
        # the tombstones this step's reviews wrote already leased go out first, before this
        # step's transaction: if that one fails, their deletes still run (the run ends after them)
        leased, self._leased = self._leased, []
        if leased:
            self._inflight = self._delete_pool().start(leased, expired=expired)
        limit = self.opts.batch_size
        if self.opts.max_deletes_per_second > 0:  # never claim more than half a lease can delete
            limit = max(1, min(limit, int(self.opts.max_deletes_per_second * self.opts.lease / 2)))
        with self.db.write() as conn:
            q = Stores(conn)
            self._settle(q, results, report)
            claimed = q.tombstones.claim(now, limit, self.owner, self.opts.lease)
        self._reclaimed(results, report)
        if claimed:
            started = self._delete_pool().start(claimed, expired=expired)
            self._inflight = started if self._inflight is None else self._inflight.joined(started)
        claimed += leased
        return len(results) + len(claimed)

    def _delete_pool(self) -> DeletePool:
        if self._pool is None:
            self._pool = DeletePool(self.storage, self.opts.workers, self.limiter)
        return self._pool

    def _wait_inflight(self) -> list[DeleteResult]:
        """The results of the deletes in flight (none if nothing is)."""
        if self._inflight is None:
            return []
        results, self._inflight = self._inflight.result(), None
        return results

    def _settle_inflight(self, report: Report) -> int:
        """Wait for the deletes in flight and settle them in a transaction of their own."""
        results = self._wait_inflight()
        if results:
            with self.db.write() as conn:
                self._settle(Stores(conn), results, report)
            self._reclaimed(results, report)
        return len(results)

    def _settle(self, q: Stores, results: list[DeleteResult], report: Report) -> None:
        """Drop the tombstones whose keys are gone and schedule a retry of each other one,
        from its own key's result (in the caller's transaction)."""
        if not results:
            return
        now = self.clock.now()
        q.tombstones.drop([r.tombstone.key for r in results if r.error is None])
        for r in results:
            if r.error is not None:
                self._failed(q, r, report, now)

    def _reclaimed(self, results: list[DeleteResult], report: Report) -> None:
        """Report the deletes whose tombstones were dropped (committed): one log line per
        object, counts and bytes per kind added once for the whole batch."""
        by_kind: dict[str, list[int]] = {}
        retried = 0
        info = log.isEnabledFor(logging.INFO)
        lines = []
        for t in (r.tombstone for r in results if r.error is None):
            kind = KIND_OF_TOMBSTONE.get(t.kind, "tombstones")
            counts = by_kind.setdefault(kind, [0, 0])
            counts[0] += 1
            counts[1] += t.size
            retried += t.attempts > 0
            if info:
                lines.append(f"gc: deleted {t.kind} {t.digest or t.key} ({t.size} bytes)")
        log_each(log, logging.INFO, lines)
        for kind, (n, size) in by_kind.items():
            report.count(kind, n, size)
            self.metrics.inc("dockyard_gc_reclaimed_objects_total", n, kind=kind)
            self.metrics.inc("dockyard_gc_reclaimed_bytes_total", size, kind=kind)
        if retried:
            report.count("tombstones", retried)

    def _failed(self, q: Stores, r: DeleteResult, report: Report, now: float) -> None:
        """Schedule the retry of a delete that failed (its tombstone stays)."""
        t = r.tombstone
        kind = KIND_OF_TOMBSTONE.get(t.kind, "tombstones")
        delay = min(self.opts.retry_max, self.opts.retry_base * (2 ** t.attempts))
        q.tombstones.failed(t.key, r.error, now + delay)
        report.fail(kind)
        self.metrics.inc("dockyard_gc_failures_total", kind=kind)

    # ---- dry run ----------------------------------------------------------------------
    def _dry_run(self, report: Report) -> None:
        now = self.clock.now()
        limit = 1_000_000
        with self.db.read() as conn:
            q = Stores(conn)
            for up in q.uploads.stale(now - self.opts.upload_ttl, limit, lock=False):
                report.add("uploads", up.size, {"upload": up.id})
            checks = (("manifests", self._review_manifests), ("links", self._review_links),
                      ("blobs", self._review_blobs), ("repositories", self._review_repositories))
            for name, review in checks:
                entries = q.reviews.claim_due(name, now + self.opts.horizon, limit, lock=False)
                for i in range(0, len(entries), self.opts.batch_size):
                    review(conn, q, entries[i:i + self.opts.batch_size], report, now, apply=False)
                if name == "manifests" and self.opts.sweep_untagged:
                    last = 0
                    while ids := q.reviews.untagged_unreviewed_manifests(last, self.opts.batch_size):
                        last = ids[-1]
                        review(conn, q, [SimpleNamespace(manifest_id=i) for i in ids], report, now, apply=False)
            # what the removed links would free in the same run
            unlinked: dict[str, set[int]] = {}
            for item in report.items:
                if item["kind"] == "links":
                    unlinked.setdefault(item["digest"], set()).add(item["repository_id"])
            counted = {item["digest"] for item in report.items if item["kind"] == "blobs"}
            for digest, repos in unlinked.items():
                blob = q.blobs.lock(digest) if digest not in counted else None
                if blob is not None and not q.blobs.referenced([digest], ignoring_repositories=repos):
                    report.add("blobs", blob.size, {"digest": digest, "after": "links"})
            for t in q.tombstones.pending(limit):
                report.add("tombstones", t.size, {"key": t.key})

    def _finish(self, report: Report) -> None:
        data = report.as_dict()
        data.pop("items", None)
        worked = report.dry_run or data["totals"]["objects"] or data["totals"]["failures"]
        with self.db.write() as conn:
            q = Stores(conn)
            if worked:  # idle runs leave no history: a daemon's wake-ups would drown the rest
                q.runs.record(self.job, report.started, self.clock.now(), report.dry_run, self.owner, data)
                if not report.dry_run:
                    EventStore(conn).record("gc", None, {"totals": data["totals"]}, self.clock.now(), self.owner)
            backlog = q.reviews.backlog(self.clock.now())
        for queue, counts in backlog.items():
            for state, n in counts.items():
                self.metrics.set("dockyard_gc_backlog", n, queue=queue, state=state)
        self.metrics.inc("dockyard_gc_runs_total")
        self.metrics.observe("dockyard_gc_run_seconds", report.duration)
        if report.total_objects or any(k.failures for k in report.kinds.values()):
            log.info("gc run%s: %s", " (dry run)" if report.dry_run else "",
                     ", ".join(f"{n}={k.objects}/{k.bytes}B" for n, k in report.kinds.items() if k.objects))
