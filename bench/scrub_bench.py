#!/usr/bin/env python3
"""The scrubber on thousands of due images: throughput, CPU per image, pool scaling, rate limit.

    python bench/scrub_bench.py [--images 10000] [--quick] [--backend sqlite|postgres]
                                [--latencies 0,20] [--pools 1,4,16] [--limit-0ms 200] [--limit-20ms 100]
                                [--pool1-budget 900] [--profile [--profile-configs 0:1,20:1,20:16]]
                                [--workdir D] [--reuse] [--keep] [--json F]

The store (built once, then copied for every configuration): repositories of 50 images,
each image a config and two small layers of its own (tests.support make_config / make_layer,
~0.3-1 KB), pushed with a tag through dockyard's in-process API (``tests.lifecycle_support``
``put_image``: ``registry.uploads.start/write/finish`` per blob, ``registry.manifests.put``)
on a real database and the filesystem driver, with a ``FakeClock``. Then every image is
deleted by digest through ``lifecycle.deletes.delete_manifest`` (delayed delete: it turns
pending_delete, its tag goes to the trash), image ``i`` at ``T_del + i * 10 ms`` of the fake
clock. Then ``Collector.for_registry(reg).run()`` once, before any scrub time: the pass a
running registry's background collector makes an hour after the pushes (each push queued
a review of its layer links for push + gc_delay; the links are still needed, so the
entries go and nothing is deleted). So rows, review-queue entries, trash entries and files
are exactly what dockyard leaves. Build workers are forked processes, each pushing a share
of the repositories (SQLite serialises their write transactions; the filesystem driver runs
without fsync during the build: that changes no row and no byte).

Each configuration runs in its own subprocess on a fresh copy of that store (``cp -a``;
PostgreSQL: ``CREATE DATABASE .. TEMPLATE``), with the clock past ``scrub_time`` and
``gc_delay`` of the last image to scrub (image ``i`` is due once the clock passes
``T_del + i * 10 ms + scrub_time``, so a run over a subset scrubs exactly its first ``k``
images and leaves the rest pending). The child builds a ``Registry`` whose storage is
``CheckedDriver(DeleteRecorder(LatencyDriver(FilesystemDriver)))`` (the recorder stamps
``time.monotonic()`` when each delete is issued and when it returns; the latency wrapper
sleeps 0 or 20 ms per call and counts calls), sets ``scrub_pool_size`` (the scrubber's
``GcOptions.workers``, via ``Scrubber.for_registry``) and ``gc_max_deletes_per_second``,
logs as ``dockyard scrub`` does (``logsetup.setup(log_level)``, one line per object, to a
file), and times ``Scrubber.for_registry(reg).run()`` only: wall (``perf_counter``) and
process CPU (``time.process_time``: every thread of the process, SQLite included; for
PostgreSQL the server backends' CPU is reported apart, from /proc).

Afterwards each run is verified: the report counts k images and 3k blobs and no failure,
the latency wrapper saw deletes only (``delete``, or batches of ``delete_many``),
3k keys in all, and no other call, the database holds exactly
the N-k images still pending and 3(N-k) blob rows, no queue entry is due and no tombstone
is left, and the blob files on disk are exactly those of the N-k unscrubbed images.

Rate limit: for every (latency, pool) another run with ``gc_max_deletes_per_second`` set
(--limit-0ms / --limit-20ms; lowered to half the unlimited run's delete rate where that
value would not bind), on the first ``limit * --limit-seconds / 3`` images; the highest
number of deletes issued in any window [t, t+1 s) is compared with the limit (also shown:
the same count over completion times, which includes the latency's jitter).

Targets (from the issue): <= 1 ms of CPU per image (glance-scrubber: about 20 ms); with
20 ms latency, pool 16 at least 10x faster than pool 1; the rate limit never exceeded in
any 1-second window.
"""

from __future__ import annotations

import argparse
import bisect
import gc
import json
import math
import multiprocessing
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(ROOT / "src"), str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

from _common import (blob_files, machine_info, pg_create, pg_drop, sa_url,  # noqa: E402
                     system_busy_seconds)

IMAGES_PER_REPO = 50
T_PUSH = 1_700_000_000.0          # fake clock of the pushes
T_DEL = T_PUSH + 86_400.0         # image i is deleted at T_DEL + i * DEL_STEP
DEL_STEP = 0.01
SCRUB_TIME = 7 * 86_400.0         # defaults of the settings, spelled out
GC_DELAY = 3_600.0
BLOBS_PER_IMAGE = 3
PYSPY_RATE = 500


# ---- the content ---------------------------------------------------------------------

def repo_of(i: int) -> str:
    r = i // IMAGES_PER_REPO
    return f"team{r // 20:03d}/svc{r:05d}"


def tag_of(i: int) -> str:
    return f"v{i % IMAGES_PER_REPO}"


def seed_of(i: int) -> str:
    return f"scrub-{i:06d}"


def image_content(i: int) -> list[bytes]:
    """config, layer a, layer b of image ``i`` (as put_image pushes them)."""
    from tests.support import make_config, make_layer

    seed = seed_of(i)
    return [make_config(seed), make_layer(seed + "-a"), make_layer(seed)]


def image_blob_digests(n: int) -> list[tuple[str, str, str]]:
    from tests.support import sha256

    return [tuple(sha256(b) for b in image_content(i)) for i in range(n)]


# ---- building the base store -----------------------------------------------------------

def open_registry(data_dir: Path, database_url: str, clock_t: float, *, fsync: bool = True, storage=None, **settings):
    from dockyard.clock import FakeClock
    from dockyard.config import load
    from dockyard.meta.db import Database
    from dockyard.registry.context import Registry
    from dockyard.storage.checked import CheckedDriver
    from dockyard.storage.filesystem import FilesystemDriver

    cfg = load(env={}, data_dir=str(data_dir), database_url=database_url or None,
               scrub_time=SCRUB_TIME, gc_delay=GC_DELAY, **settings)
    db = Database(cfg.effective_database_url)
    if storage is None:
        storage = CheckedDriver(FilesystemDriver(cfg.effective_storage_root, fsync=fsync))
    return Registry(config=cfg, db=db, storage=storage, clock=FakeClock(clock_t))


def _build_worker(args) -> tuple[int, int]:
    """Push and then delete the images of the given repositories (one process)."""
    from dockyard.lifecycle import deletes
    from tests.lifecycle_support import put_image
    from tests.support import sha256

    data_dir, database_url, n, repos, w = args
    reg = open_registry(Path(data_dir), database_url, T_PUSH + w * 0.0001, fsync=False)
    mine = [i for r in repos for i in range(r * IMAGES_PER_REPO, min(n, (r + 1) * IMAGES_PER_REPO))]
    digests = {}
    try:
        for i in mine:
            config, layer_a, layer_b = image_content(i)
            # put_image pushes [config, *shared, make_layer(seed)]: layer a goes in as "shared"
            digest, blobs = put_image(reg, repo_of(i), tag_of(i), seed_of(i), shared=[layer_a])
            assert [sha256(b) for b in blobs] == [sha256(config), sha256(layer_a), sha256(layer_b)]
            digests[i] = digest
            reg.clock.advance(0.001)
        for i in mine:
            reg.clock.t = T_DEL + i * DEL_STEP
            deletes.delete_manifest(reg, repo_of(i), digests[i], actor="bench")
    finally:
        reg.db.dispose()
    return len(mine), w


def build_store(data_dir: Path, database_url: str, n: int, workers: int) -> dict:
    from dockyard.meta.db import Database
    from dockyard.config import load

    t0 = time.perf_counter()
    data_dir.mkdir(parents=True, exist_ok=True)
    cfg = load(env={}, data_dir=str(data_dir), database_url=database_url or None)
    db = Database(cfg.effective_database_url)
    db.migrate()
    db.dispose()
    n_repos = math.ceil(n / IMAGES_PER_REPO)
    jobs = [(str(data_dir), database_url, n, list(range(w, n_repos, workers)), w) for w in range(workers)]
    if workers == 1:
        pushed = [_build_worker(jobs[0])]
    else:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            pushed = pool.map(_build_worker, jobs)
    assert sum(c for c, _ in pushed) == n
    info = {"seconds": time.perf_counter() - t0}
    info.update(background_collect(data_dir, database_url, n))
    return info


def background_collect(data_dir: Path, database_url: str, n: int) -> dict:
    """The pass a running registry's background collector makes long before any scrub time:
    every push queued a review of its layer links for push + gc_delay; the links are still
    needed (by the images, pending or not), so the entries are dropped and nothing is deleted."""
    from dockyard.lifecycle.collector import Collector

    t0 = time.perf_counter()
    reg = open_registry(data_dir, database_url, T_DEL + n * DEL_STEP + 1.0)
    try:
        assert reg.clock.now() > T_PUSH + n * 0.001 + GC_DELAY
        report = Collector.for_registry(reg).run()
        assert report.total_objects == 0, f"the background collector removed something: {report.as_dict()}"
        if not database_url:  # fold the WAL into the database file before it is copied
            with reg.db.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        reg.db.dispose()
    return {"collected": True, "collect_seconds": time.perf_counter() - t0}


def count_rows(database_url_or_dir) -> dict:
    """Row counts of the tables the checks look at."""
    import sqlalchemy as sa

    url = database_url_or_dir
    eng = sa.create_engine(url)
    try:
        with eng.connect() as c:
            q = lambda sql: c.exec_driver_sql(sql).scalar()
            return {
                "manifests": q("select count(*) from manifests"),
                "pending": q("select count(*) from manifests where state = 'pending_delete'"),
                "blobs": q("select count(*) from blobs"),
                "links": q("select count(*) from repository_blobs"),
                "tags": q("select count(*) from tags"),
                "trashed_tags": q("select count(*) from trashed_tags"),
                "repositories": q("select count(*) from repositories"),
                "uploads": q("select count(*) from uploads"),
                "link_reviews": q("select count(*) from gc_link_reviews"),
                "blob_reviews": q("select count(*) from gc_blob_reviews"),
                "manifest_reviews": q("select count(*) from gc_manifest_reviews"),
                "repository_reviews": q("select count(*) from gc_repository_reviews"),
                "tombstones": q("select count(*) from gc_tombstones"),
            }
    finally:
        eng.dispose()


def upload_files(data_dir: Path) -> int:
    root = data_dir / "storage" / "uploads"
    return sum(len(f) for _, _, f in os.walk(root)) if root.exists() else 0


# ---- the child: one timed scrub ----------------------------------------------------------------

class DeleteRecorder:
    """Stamps each delete when it is issued and when it returns (time.monotonic); with a
    rate limit also the time the limiter granted it (the clock value the limiter read last
    in this thread, which it stored as that delete's time)."""

    def __init__(self, inner, grant: threading.local):
        self.inner = inner
        self.name = inner.name
        self.grant = grant
        self.issued: list[float] = []
        self.returned: list[float] = []
        self.granted: list[tuple[float, float]] = []  # (granted, issued)

    def delete(self, key: str) -> None:
        t = time.monotonic()
        self.issued.append(t)  # list.append is atomic under the GIL
        g = getattr(self.grant, "t", None)
        if g is not None:
            self.granted.append((g, t))
        try:
            self.inner.delete(key)
        finally:
            self.returned.append(time.monotonic())

    def delete_many(self, keys):
        """A batch (the collector's ``DeletePool``): every key stamped as issued at the call."""
        keys = list(keys)
        t = time.monotonic()
        self.issued.extend([t] * len(keys))
        g = getattr(self.grant, "t", None)
        if g is not None:
            self.granted.extend([(g, t)] * len(keys))
        try:
            return self.inner.delete_many(keys)
        finally:
            self.returned.extend([time.monotonic()] * len(keys))

    def __getattr__(self, name):  # every other call goes straight through
        return getattr(self.inner, name)


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The largest number of events in any window [t, t + window)."""
    ts = sorted(times)
    best = 0
    for i, t in enumerate(ts):  # the best window can always start at an event
        j = bisect.bisect_left(ts, t + window, i)
        best = max(best, j - i)
    return best


def _lag_stats(pairs: list[tuple[float, float]]) -> dict | None:
    """How long after the limiter's grant each delete was issued (ms): median, p99, max."""
    if not pairs:
        return None
    lags = sorted(1000 * (i - g) for g, i in pairs)
    return {"p50": lags[len(lags) // 2], "p99": lags[int(0.99 * (len(lags) - 1))], "max": lags[-1]}


class _SqlStats:
    """Every statement the scrub sends to the database driver: count and time inside the
    driver's execute (SQLite: the C library's work), grouped by text with IN-lists folded;
    then, on SQLite, each one's EXPLAIN QUERY PLAN (with the parameters it first ran with)."""

    _LIST = re.compile(r"\?(?:, \?)+")
    _ROWS = re.compile(r"\((?:\?\.\.\.|\?)\)(?:, \((?:\?\.\.\.|\?)\))+")

    def __init__(self, engine):
        self.engine = engine
        self.stats: dict[str, list] = {}

    def start(self) -> None:
        from sqlalchemy import event

        event.listen(self.engine, "before_cursor_execute", self._before)
        event.listen(self.engine, "after_cursor_execute", self._after)

    def stop(self) -> None:
        from sqlalchemy import event

        event.remove(self.engine, "before_cursor_execute", self._before)
        event.remove(self.engine, "after_cursor_execute", self._after)

    def _before(self, conn, cursor, statement, parameters, context, executemany):
        conn.info.setdefault("_bench_t0", []).append(time.perf_counter())

    def _after(self, conn, cursor, statement, parameters, context, executemany):
        took = time.perf_counter() - conn.info["_bench_t0"].pop()
        key = self._ROWS.sub("(...), ...", self._LIST.sub("?...", statement))
        entry = self.stats.get(key)
        if entry is None:
            entry = self.stats[key] = [0, 0.0, statement, None if executemany else parameters, 0]
        entry[0] += 1
        entry[1] += took
        entry[4] += len(parameters) if executemany else 1

    def summary(self, db) -> list[dict]:
        out = []
        for key, (count, seconds, raw, params, rows) in self.stats.items():
            plan = None
            if not db.is_postgres and params is not None and not raw.lstrip().upper().startswith(("BEGIN", "COMMIT")):
                try:
                    with db.engine.connect() as conn:
                        plan = [r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + raw, params)]
                except Exception as exc:  # a plan is diagnostics only
                    plan = [f"(no plan: {type(exc).__name__})"]
            out.append({"sql": key, "count": count, "seconds": seconds, "param_sets": rows, "plan": plan})
        return sorted(out, key=lambda e: -e["seconds"])


def _cpu_pressure() -> int | None:
    """Microseconds some runnable task waited for a CPU, since boot (/proc/pressure/cpu)."""
    try:
        with open("/proc/pressure/cpu") as fh:
            return int(fh.readline().split("total=")[1])
    except (OSError, IndexError, ValueError):
        return None


def _proc_cpu(pid: int) -> float:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    f = raw[raw.rindex(")") + 2:].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def child(spec: dict) -> dict:
    import cProfile

    from dockyard.lifecycle.collector import Collector
    from dockyard.lifecycle.ratelimit import WindowLimiter
    from dockyard.lifecycle.scrubber import Scrubber
    from dockyard.logsetup import setup
    from dockyard.storage.checked import CheckedDriver
    from dockyard.storage.filesystem import FilesystemDriver
    from dockyard.storage.latency import LatencyDriver

    data_dir = Path(spec["data_dir"])
    latency = spec["latency_ms"] / 1000.0
    fs = FilesystemDriver(data_dir / "storage")
    lat = LatencyDriver(fs, latency)
    grant = threading.local()
    rec = DeleteRecorder(lat, grant)
    reg = open_registry(data_dir, spec["database_url"], spec["clock"], storage=CheckedDriver(rec),
                        scrub_pool_size=spec["pool"], gc_max_deletes_per_second=spec["limit"],
                        storage_latency=latency, log_level=spec["log_level"])
    assert reg.config.scrub_pool_size == spec["pool"]
    setup(reg.config.log_level)  # as `dockyard scrub` does; stderr goes to the run's log file
    pg = reg.db.is_postgres

    def backend_pids() -> list[int]:
        with reg.db.read() as conn:
            return [r[0] for r in conn.exec_driver_sql(
                "select pid from pg_stat_activity where datname = current_database()")]

    sql_stats = _SqlStats(reg.db.engine) if spec.get("profile") else None
    with reg.db.read() as conn:  # warm up: connection, pragmas, imports
        due = conn.exec_driver_sql(
            "select count(*) from manifests where state = 'pending_delete' and scrub_after <= %s"
            % repr(spec["clock"])).scalar()
    assert due == spec["images"], f"{due} images due, expected {spec['images']}"
    scrubber = Scrubber.for_registry(reg)
    assert scrubber.opts.workers == spec["pool"] and scrubber.opts.max_deletes_per_second == spec["limit"]
    if spec["limit"]:
        # the same limiter, with a clock that leaves the value it returns in the calling
        # thread: the recorder then knows the time the limiter stored for each delete
        def clock() -> float:
            grant.t = time.monotonic()
            return grant.t

        assert type(scrubber.limiter) is WindowLimiter and scrubber.limiter.rate == spec["limit"]
        scrubber.limiter = WindowLimiter(spec["limit"], clock=clock)
    pids0 = {p: _proc_cpu(p) for p in backend_pids()} if pg else {}
    gc.collect()
    # profiling: a cProfile with a per-thread CPU clock in the main thread and in every
    # thread started during the run (the delete pool), merged afterwards
    prof = cProfile.Profile(time.thread_time) if spec.get("profile") else None
    thread_profs: list[cProfile.Profile] = []

    def start_thread_profile(frame, event, arg):
        tp = cProfile.Profile(time.thread_time)
        thread_profs.append(tp)
        tp.enable()

    spy = None
    if spec.get("pyspy"):  # a sampling profiler on this process, for the run only
        spy_log = open(spec["pyspy"] + ".log", "wb")
        spy = subprocess.Popen(["py-spy", "record", "--pid", str(os.getpid()), "--rate", str(spec["pyspy_rate"]),
                                "--format", "raw", "--function", *spec.get("pyspy_args", []), "-o", spec["pyspy"]],
                               stdout=spy_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        time.sleep(1.5)  # attached and sampling
        if spy.poll() is not None:
            raise RuntimeError(f"py-spy exited: {Path(spec['pyspy'] + '.log').read_text()}")
    busy0, psi0 = system_busy_seconds(), _cpu_pressure()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    w0, c0, m0 = time.perf_counter(), time.process_time(), time.thread_time()
    if sql_stats:
        sql_stats.start()
    if prof:
        threading.setprofile(start_thread_profile)
        prof.enable()
    report = scrubber.run()
    # A purged image's layer links keep gc_delay (a push may have HEADed a layer a moment
    # ago and PUT its manifest next), so its blobs go in the scrubber's collection after
    # gc_delay: that collection (the scrubber's, with its pool and limiter; not its purge
    # step, which would find later images due by then) is part of the scrub, and timed.
    reg.clock.advance(GC_DELAY + 1)
    report.merge(Collector(reg.db, reg.storage, reg.clock, scrubber.opts, limiter=scrubber.limiter).run())
    if prof:
        prof.disable()
        threading.setprofile(None)
    wall, cpu, cpu_main = time.perf_counter() - w0, time.process_time() - c0, time.thread_time() - m0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    busy = system_busy_seconds() - busy0
    psi = None if psi0 is None else (_cpu_pressure() - psi0) / 1e6
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output and exits
        spy.wait(60)
    db_cpu = None
    if pg:
        db_cpu = sum(_proc_cpu(p) - pids0.get(p, 0.0) for p in backend_pids())
    if prof:
        import pstats

        prof.create_stats()
        stats = pstats.Stats(prof)
        for tp in thread_profs:
            tp.create_stats()
            stats.add(tp)
        stats.dump_stats(spec["profile"])
    if sql_stats:
        sql_stats.stop()
        with open(spec["profile"] + ".sql.json", "w") as fh:
            json.dump(sql_stats.summary(reg.db), fh)
    kinds = {k: {"objects": v.objects, "bytes": v.bytes, "failures": v.failures} for k, v in report.kinds.items()}
    with reg.db.read() as conn:
        from dockyard.meta.stores import Stores
        backlog = Stores(conn).reviews.backlog(reg.clock.now())
    reg.db.dispose()
    return {
        "wall": wall, "cpu": cpu, "cpu_main": cpu_main, "cpu_sys": ru1.ru_stime - ru0.ru_stime,
        "db_cpu": db_cpu, "machine_busy": busy, "cpu_pressure": psi, "profiled_threads": len(thread_profs),
        "kinds": kinds, "calls": dict(lat.calls), "issued": len(rec.issued),
        "max_window_issued": max_in_window(rec.issued), "max_window_returned": max_in_window(rec.returned),
        "max_window_granted": max_in_window([g for g, _ in rec.granted]) if rec.granted else None,
        "grant_lag_ms": _lag_stats(rec.granted),
        "delete_span": (max(rec.issued) - min(rec.issued)) if rec.issued else 0.0,
        "backlog": backlog,
    }


# ---- the parent: one configuration -------------------------------------------------------------

@dataclass
class Run:
    latency_ms: int
    pool: int
    limit: float
    images: int
    note: str = ""
    result: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return self.images / self.result["wall"]

    @property
    def deletes_per_s(self) -> float:
        return self.result["issued"] / self.result["wall"]

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.result["cpu"] / self.images

    @property
    def db_cpu_ms(self) -> float | None:
        d = self.result.get("db_cpu")
        return None if d is None else 1000 * d / self.images


class Bench:
    def __init__(self, args):
        self.args = args
        self.n = args.images
        self.work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="scrub-bench-"))
        self.base = self.work / f"base-{args.backend}-n{self.n}"
        self.base_db = ""
        self.base_pg_name = ""
        self.digests: list[tuple[str, str, str]] = []
        self.base_rows: dict = {}
        self.runs: list[Run] = []
        self.seq = 0

    def log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    # -- base store
    def build(self) -> None:
        a = self.args
        marker = self.base / "built.json"
        if a.backend == "sqlite" and a.reuse and marker.exists():
            self.log(f"reusing base store {self.base}")
            info = json.loads(marker.read_text())
            if not info.get("collected"):  # built by an older version of this script
                self.log("running the background collector's pass on it")
                info.update(background_collect(self.base, "", self.n))
                marker.write_text(json.dumps(info))
        else:
            if self.base.exists():
                shutil.rmtree(self.base)
            if a.backend == "postgres":
                self.base_pg_name = f"dockyard_scrubb_{uuid.uuid4().hex[:10]}"
                self.base_db = pg_create(self.base_pg_name)
            self.log(f"building base store: {self.n} images x {BLOBS_PER_IMAGE} blobs, {a.backend}, "
                     f"{a.build_workers} build processes, in {self.base}")
            info = build_store(self.base, self.base_db, self.n, a.build_workers)
            if a.backend == "sqlite":
                marker.write_text(json.dumps({"images": self.n, **info}))
            self.log(f"built in {info['seconds']:.0f}s ({1000 * info['seconds'] / self.n:.1f} ms/image), "
                     f"then the background collector's pass in {info['collect_seconds']:.0f}s")
        self.digests = image_blob_digests(self.n)
        files = blob_files(self.base)
        self.base_rows = count_rows(sa_url(self.base_db, self.base))
        expect = {d for ds in self.digests for d in ds}
        r = self.base_rows
        problems = []
        if files != expect:
            problems.append(f"base store holds {len(files)} blob files, expected {len(expect)}")
        queued = r["link_reviews"] + r["blob_reviews"] + r["manifest_reviews"] + r["repository_reviews"] + r["tombstones"]
        if (r["manifests"], r["pending"], r["blobs"], r["links"], r["tags"], r["trashed_tags"], r["uploads"], queued) != \
                (self.n, self.n, BLOBS_PER_IMAGE * self.n, BLOBS_PER_IMAGE * self.n, 0, self.n, 0, 0):
            problems.append(f"base store rows unexpected: {r}")
        if upload_files(self.base):
            problems.append("base store has staged upload files left")
        if problems:
            raise SystemExit("base store check failed: " + "; ".join(problems))
        self.log(f"base store: {len(files)} blob files, rows {r}")

    def cleanup(self) -> None:
        if self.base_pg_name:
            pg_drop(self.base_pg_name)
        if not self.args.keep and not self.args.workdir:
            shutil.rmtree(self.work, ignore_errors=True)

    # -- one run
    def run(self, latency_ms: int, pool: int, limit: float, images: int, note: str = "",
            profile: str | None = None, pyspy: str | None = None) -> Run:
        self.seq += 1
        name = f"r{self.seq:02d}-{latency_ms}ms-p{pool}-l{int(limit)}-k{images}"
        run_dir = self.work / "runs" / name
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", "--reflink=auto", str(self.base), str(run_dir)], check=True)
        pg_name = ""
        database_url = ""
        if self.args.backend == "postgres":
            pg_name = f"dockyard_scrubr_{uuid.uuid4().hex[:10]}"
            database_url = pg_create(pg_name, template=self.base_pg_name)
        clock = T_DEL + (images - 0.5) * DEL_STEP + SCRUB_TIME  # past scrub_after of images 0..k-1 only
        assert clock - GC_DELAY > T_PUSH + self.n  # links are older than gc_delay
        spec = {"data_dir": str(run_dir), "database_url": database_url, "clock": clock, "images": images,
                "latency_ms": latency_ms, "pool": pool, "limit": limit, "log_level": self.args.log_level,
                "profile": profile, "pyspy": pyspy, "pyspy_rate": PYSPY_RATE,
                "pyspy_args": ["--gil"]}  # samples of the thread holding the GIL: ~ the process's CPU
        run = Run(latency_ms, pool, limit, images, note)
        self.log(f"run {name}: latency {latency_ms} ms, pool {pool}, limit {limit or '-'}/s, {images} images{' (cProfile)' if profile else ' (py-spy)' if pyspy else ''}")
        try:
            with open(run_dir / "scrub.log", "wb") as err:
                out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
                                     stdout=subprocess.PIPE, stderr=err, check=False)
            if out.returncode != 0:
                tail = (run_dir / "scrub.log").read_text(errors="replace").splitlines()[-20:]
                raise RuntimeError(f"run {name} failed ({out.returncode}):\n" + "\n".join(tail))
            run.result = json.loads(out.stdout.decode().strip().splitlines()[-1])
            self.verify(run, run_dir, database_url)
        finally:
            if pg_name:
                pg_drop(pg_name)
            if not self.args.keep:
                shutil.rmtree(run_dir, ignore_errors=True)
        r = run.result
        self.log(f"  {r['wall']:.2f}s wall, {run.images_per_s:.0f} images/s, {run.deletes_per_s:.0f} deletes/s, "
                 f"CPU {run.cpu_ms:.2f} ms/image" + (f" (+ db server {run.db_cpu_ms:.2f})" if run.db_cpu_ms is not None else "")
                 + f", max deletes in 1 s: {r['max_window_issued']}"
                 + (f" (limit {limit:g})" if limit else "")
                 + (f"; PROBLEMS: {run.problems}" if run.problems else "; verified"))
        if not profile and not pyspy:
            self.runs.append(run)
        return run

    def verify(self, run: Run, run_dir: Path, database_url: str) -> None:
        r, k, n = run.result, run.images, self.n
        p = run.problems
        kinds = r["kinds"]
        got = lambda kind: kinds.get(kind, {}).get("objects", 0)
        if got("images") != k:
            p.append(f"report: {got('images')} images purged, expected {k}")
        if got("blobs") != BLOBS_PER_IMAGE * k:
            p.append(f"report: {got('blobs')} blobs deleted, expected {BLOBS_PER_IMAGE * k}")
        if any(v["failures"] for v in kinds.values()):
            p.append(f"report: failures {kinds}")
        # deletes only (one key per call, or batches of delete_many), 3k keys in all
        deletes_only = set(r["calls"]) <= {"delete", "delete_many"} and bool(r["calls"]) == bool(k)
        if not deletes_only or r["issued"] != BLOBS_PER_IMAGE * k:
            p.append(f"storage calls {r['calls']}, recorded deletes {r['issued']}, expected {BLOBS_PER_IMAGE * k} deletes")
        due = {q: c["due"] for q, c in r["backlog"].items() if c["due"]}
        if due or r["backlog"]["tombstones"]["pending"]:
            p.append(f"backlog left: {r['backlog']}")
        rows = count_rows(sa_url(database_url, run_dir))
        left = n - k
        if (rows["manifests"], rows["pending"], rows["blobs"], rows["tombstones"]) != (left, left, BLOBS_PER_IMAGE * left, 0):
            p.append(f"rows after: {rows}")
        files = blob_files(run_dir)
        expect = {d for ds in self.digests[k:] for d in ds}
        if files != expect:
            p.append(f"{len(files)} blob files left, expected {len(expect)} "
                     f"({len(files & {d for ds in self.digests[:k] for d in ds})} of scrubbed images remain)")
        if upload_files(run_dir):
            p.append("staged upload files left")
        run.result["rows_after"] = rows
        run.result["files_after"] = len(files)


# ---- output ------------------------------------------------------------------------------------

def dockyard_revision() -> str:
    """The commit of the dockyard tree under test, and whether src/ differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip() or "?"
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return head + (" + uncommitted changes in src/" if dirty else "")


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def report(b: Bench, started: float) -> tuple[str, bool]:
    a = b.args
    pg = a.backend == "postgres"
    headers = ["latency", "pool", "images", "wall s", "images/s", "deletes/s", "CPU ms/image",
               "(main thread / delete threads; kernel)"]
    if pg:
        headers.append("+ pg server ms/image")
    headers += ["rate limit/s", "max deletes in any 1 s window (issued)", "(completed)", "(limiter's grant times)",
                "grant->issue lag p99/max ms", "machine busy cores", "CPU pressure %", "verified"]
    rows = []
    for r in b.runs:
        res = r.result
        row = [f"{r.latency_ms} ms", str(r.pool), f"{r.images}" + (f" {r.note}" if r.note else ""),
               f"{res['wall']:.2f}", f"{r.images_per_s:.0f}", f"{r.deletes_per_s:.0f}", f"{r.cpu_ms:.2f}",
               f"{1000 * res['cpu_main'] / r.images:.2f} / {1000 * (res['cpu'] - res['cpu_main']) / r.images:.2f}; "
               f"{1000 * res['cpu_sys'] / r.images:.2f}"]
        if pg:
            row.append(f"{r.db_cpu_ms:.2f}")
        row += [f"{r.limit:g}" if r.limit else "-",
                str(res["max_window_issued"]) + (("  <= limit" if res["max_window_issued"] <= r.limit else "  EXCEEDED")
                                                 if r.limit else ""),
                str(res["max_window_returned"]),
                "-" if res.get("max_window_granted") is None else str(res["max_window_granted"]),
                "-" if not res.get("grant_lag_ms") else f"{res['grant_lag_ms']['p99']:.2f}/{res['grant_lag_ms']['max']:.2f}",
                f"{res['machine_busy'] / res['wall']:.2f}",
                "-" if res.get("cpu_pressure") is None else f"{100 * res['cpu_pressure'] / res['wall']:.0f}",
                "yes" if not r.problems else "NO"]
        rows.append(row)
    out = [table(headers, rows), "",
           "CPU ms/image: process CPU time (every thread; SQLite runs in process) during Scrubber.run only, per image "
           "scrubbed; split into the main thread (SQL, planning, logging) and the delete pool's threads; kernel = "
           "system time of the process.",
           "max deletes in any 1 s window: the most deletes in any [t, t + 1 s), over the times the driver wrapper saw "
           "each delete issued; (completed): the times they returned; (limiter's grant times): the time "
           "WindowLimiter stored for each, read through its clock hook.",
           f"machine busy cores (of {os.cpu_count()}): every process on the machine, this one included; CPU pressure: "
           "share of the wall time some runnable task waited for a CPU (/proc/pressure/cpu). Wall times, and so "
           "images/s, are only as good as the machine was idle.", ""]

    # targets
    ok = True
    lines = []
    unl = [r for r in b.runs if not r.limit]
    worst = max(unl, key=lambda r: r.cpu_ms) if unl else None
    if worst:
        good = worst.cpu_ms <= 1.0
        ok &= good
        lines.append(f"CPU per image <= 1 ms (glance-scrubber ~20 ms): {'PASS' if good else 'FAIL'} - "
                     f"{min(r.cpu_ms for r in unl):.2f}..{worst.cpu_ms:.2f} ms/image over the unlimited runs"
                     + (" (scrubber process only; PostgreSQL server CPU apart: "
                        f"{min(r.db_cpu_ms for r in unl):.2f}..{max(r.db_cpu_ms for r in unl):.2f} ms/image)" if pg else ""))
    by = {(r.latency_ms, r.pool): r for r in unl}
    lat = max((r.latency_ms for r in unl), default=0)
    if lat and (lat, 1) in by and (lat, max(a.pools)) in by:
        p1, pn = by[(lat, 1)], by[(lat, max(a.pools))]
        speed = pn.images_per_s / p1.images_per_s
        good = speed >= 10
        ok &= good
        lines.append(f"{lat} ms latency, pool {max(a.pools)} >= 10x pool 1: {'PASS' if good else 'FAIL'} - "
                     f"{speed:.1f}x ({pn.images_per_s:.0f} vs {p1.images_per_s:.1f} images/s"
                     + (f"; pool 1 on {p1.images} images {p1.note}" if p1.note else "") + ")")
    lim = [r for r in b.runs if r.limit]
    if lim:
        over = [r for r in lim if r.result["max_window_issued"] > r.limit]
        binding = [r for r in lim if r.result["max_window_issued"] >= 0.9 * r.limit]
        good = not over
        ok &= good
        lines.append(f"rate limit never exceeded in any 1 s window: {'PASS' if good else 'FAIL'} - "
                     f"{len(lim) - len(over)}/{len(lim)} runs within; the limit bound (a window reached >= 90% of it) "
                     f"in {len(binding)}/{len(lim)}")
    bad = [r for r in b.runs if r.problems]
    ok &= not bad
    lines.append(f"every run purged its images and deleted exactly their blobs: {'PASS' if not bad else 'FAIL'}"
                 + "".join(f"\n    {r.latency_ms} ms pool {r.pool} limit {r.limit:g}: {'; '.join(r.problems)}" for r in bad))
    out += ["targets:"] + [f"  {l}" for l in lines]
    out.append(f"\n{len(b.runs)} runs, {time.time() - started:.0f}s in all")
    return "\n".join(out), ok


def _leaf_group(frame: str) -> str:
    """Where a sample's own time goes, from its innermost Python frame (py-spy shows no C
    frames: time in sqlite3 or a syscall is charged to the Python function that called it)."""
    name, _, where = frame.partition(" (")
    if "sqlalchemy/engine/default.py" in where and name.rsplit(".", 1)[-1] in (
            "do_execute", "do_executemany", "do_commit", "do_rollback", "do_execute_no_params"):
        return "sqlite3 C library (statements, commits), called from SQLAlchemy"
    if "sqlalchemy/" in where:
        return "SQLAlchemy Python (building/compiling statements, params, result rows, pool, events)"
    if "logging/" in where:
        return "logging (one INFO line per object)"
    if "threading.py" in where or "concurrent/" in where or "queue.py" in where:
        return "thread pool: futures, conditions, locks"
    if "pathlib.py" in where:
        return "pathlib (FilesystemDriver._path)"
    if name == "FilesystemDriver.delete":
        return "FilesystemDriver.delete incl. unlink/rmdir syscalls"
    if "dockyard/" in where:
        return "dockyard Python (own time)"
    if "scrub_bench.py" in where:
        return "benchmark wrapper (DeleteRecorder)"
    return "other"


def pyspy_summary(path: str, images: int, run: Run, top: int = 22) -> str:
    """Shares of the run's CPU from py-spy samples (--gil: the thread holding the GIL, any thread)."""
    from collections import Counter

    own, incl, groups, threads = Counter(), Counter(), Counter(), Counter()
    total = outside = 0
    for line in open(path):
        stack, _, n = line.rstrip("\n").rpartition(" ")
        if not stack:
            continue
        n = int(n)
        frames = stack.split(";")
        worker = any(f.startswith("_worker (concurrent/") for f in frames)
        if not worker and not any(f.startswith("Scrubber.run ") for f in frames):
            outside += n  # py-spy's own attach/detach, the child's set-up
            continue
        total += n
        threads["delete threads" if worker else "main thread"] += n
        own[frames[-1]] += n
        groups[_leaf_group(frames[-1])] += n
        for f in set(frames):
            incl[f] += n
    if not total:
        return f"py-spy: no samples in {path}"
    res = run.result
    est = total / PYSPY_RATE
    pct = lambda n: f"{100 * n / total:.1f}"
    out = [f"py-spy ({PYSPY_RATE} Hz, --gil: the thread holding the GIL, during Scrubber.run only): {total} samples "
           f"~ {est:.2f} CPU s vs {res['cpu']:.2f} CPU s measured in that run ({1000 * res['cpu'] / images:.2f} ms/image; "
           f"wall {res['wall']:.2f}s); main thread {pct(threads['main thread'])}%, delete threads {pct(threads['delete threads'])}%",
           "own time by where the innermost Python frame lives:",
           table(["group", "% of samples", "~ms/image"],
                 [[g, pct(n), f"{1000 * res['cpu'] * n / total / images:.3f}"] for g, n in groups.most_common()]),
           f"\ntop {top} functions by own samples (innermost Python frame)",
           table(["function", "own %", "incl %"], [[f, pct(n), pct(incl[f])] for f, n in own.most_common(top)]),
           "\ndockyard functions by inclusive samples (callees included)",
           table(["function", "incl %", "own %"],
                 [[f, pct(n), pct(own[f])] for f, n in incl.most_common() if "(dockyard/" in f][:top])]
    return "\n".join(out)


def profile_summary(path: str, images: int, run: Run, top: int = 25) -> str:
    """Exact call counts (and, distorted by the profiler's overhead, CPU) from cProfile."""
    import pstats

    st = pstats.Stats(path)
    total = st.total_tt
    rows = [(tt, ct, nc, file, func) for (file, line, func), (cc, nc, tt, ct, _c) in st.stats.items()]
    name = lambda file, func: f"{func} ({_short(file)})" if file != "~" else func
    out = [f"cProfile, per-thread CPU clock, main thread + {run.result['profiled_threads']} delete thread(s) merged: "
           f"{1000 * total / images:.2f} ms/image under the profiler (its overhead inflates functions called often; "
           f"use it for the call counts)"]
    hdr = ["function", "calls/image", "cum CPU %", "own CPU %"]
    fmt = lambda tt, ct, nc, n: [n, f"{nc / images:.2f}", f"{100 * ct / total:.1f}", f"{100 * tt / total:.1f}"]
    wanted = ("execute' of 'sqlite3.Cursor", "executemany' of 'sqlite3.Cursor", "commit' of 'sqlite3.Connection",
              "posix.unlink", "posix.rmdir", "time.sleep")
    picked = [r for r in rows if (r[3] == "~" and any(w in r[4] for w in wanted))
              or (r[3].endswith("logging/__init__.py") and r[4] in ("emit", "makeRecord"))]
    out.append(table(hdr, [fmt(tt, ct, nc, name(file, func)) for tt, ct, nc, file, func in
                           sorted(picked, key=lambda r: -r[2])]))
    mine = [r for r in rows if "/dockyard/" in r[3]]
    out.append(f"\ndockyard functions, top {top} by cumulative CPU under cProfile")
    out.append(table(hdr, [fmt(tt, ct, nc, name(file, func))
                           for tt, ct, nc, file, func in sorted(mine, key=lambda r: r[1], reverse=True)[:top]]))
    sql_path = Path(path + ".sql.json")
    if sql_path.exists():
        stmts = json.loads(sql_path.read_text())
        total_s = sum(e["seconds"] for e in stmts)
        out.append(f"\nSQL statements of the scrub, by time inside the database driver's execute "
                   f"({total_s:.2f}s in all = {1000 * total_s / images:.2f} ms/image, under cProfile; the SQLAlchemy "
                   f"work around each call is not in it); 'SCAN <table>' = the whole table is read at each execution")
        body = []
        for e in stmts[:15]:
            scans = [p for p in (e["plan"] or []) if p.startswith("SCAN ") and "CONSTANT ROW" not in p]
            plan = "; ".join(scans) if scans else ("index only" if e["plan"] else "-")
            body.append([" ".join(e["sql"].split())[:110], f"{e['count'] / images:.2f}", f"{1000 * e['seconds'] / images:.3f}",
                         f"{100 * e['seconds'] / total_s:.1f}" if total_s else "-", plan[:70]])
        out.append(table(["statement (IN-lists folded)", "executions/image", "ms/image", "% of SQL time",
                          "full scans (EXPLAIN QUERY PLAN)"], body))
    return "\n".join(out)


def _short(file: str) -> str:
    for marker in ("/src/dockyard/", "/site-packages/", "/lib/python3.11/", "/lib/python3"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


# ---- main ---------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=None, help="pending images to scrub (default 10000; --quick 1000)")
    p.add_argument("--quick", action="store_true", help="1,000 images")
    p.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--latencies", default="0,20", help="ms per storage call, comma-separated")
    p.add_argument("--pools", default="1,4,16", help="scrub_pool_size values, comma-separated")
    p.add_argument("--limit-0ms", type=float, default=200.0, help="gc_max_deletes_per_second for 0 ms runs")
    p.add_argument("--limit-20ms", type=float, default=100.0, help="... for runs with latency (lowered where it would not bind)")
    p.add_argument("--limit-seconds", type=float, default=40.0, help="rate-limited runs scrub about this many seconds of deletes")
    p.add_argument("--no-limit-runs", action="store_true")
    p.add_argument("--pool1-budget", type=float, default=900.0,
                   help="seconds a pool-1 run with latency may take; above that it scrubs a subset")
    p.add_argument("--log-level", default="info", help="scrubber log level (default info, as dockyard scrub)")
    p.add_argument("--profile", action="store_true",
                   help="also profile unlimited runs of 1,000 images (cProfile, per-thread CPU clock, every thread)")
    p.add_argument("--profile-configs", default="0:1,20:1,20:16", help="LATENCY_MS:POOL,... to profile")
    p.add_argument("--build-workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--workdir", help="stores go here (default: a temporary directory, removed afterwards)")
    p.add_argument("--reuse", action="store_true", help="reuse a base store already built in --workdir (sqlite)")
    p.add_argument("--keep", action="store_true", help="keep run copies")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(json.loads(a.child))))
        return 0
    a.images = a.images or (1000 if a.quick else 10000)
    a.latencies = [int(x) for x in a.latencies.split(",")]
    a.pools = [int(x) for x in a.pools.split(",")]
    started = time.time()
    b = Bench(a)
    m = machine_info()
    print(f"scrub benchmark: {a.images} pending images x {BLOBS_PER_IMAGE} blobs of their own, {a.backend}, "
          f"latencies {a.latencies} ms, pools {a.pools}, log level {a.log_level}")
    print(f"machine: {m['nproc']} CPUs {m['cpu']}, {m['memory']}, {m['python']}; workdir {b.work}")
    revision = dockyard_revision()
    print(f"dockyard under test: {revision}", flush=True)
    profiles = []
    try:
        b.build()
        for lat in a.latencies:
            pools = sorted(a.pools, reverse=bool(lat))  # with latency: pool 1 last, estimated from the others
            unl: dict[int, Run] = {}
            for pool in pools:
                images, note = a.images, ""
                if lat and pool == 1 and unl:
                    ref = unl[max(unl)]
                    base0 = next((r for r in b.runs if r.latency_ms == 0 and r.pool == 1 and not r.limit), None)
                    per_image = BLOBS_PER_IMAGE * lat / 1000 * 1.03 + (base0.result["wall"] / base0.images if base0 else
                                                                     ref.result["cpu"] / ref.images)
                    est = per_image * a.images
                    if est > a.pool1_budget:
                        images = max(100, int(a.pool1_budget / per_image))
                        note = f"(subset: {a.images} would take ~{est / 60:.0f} min)"
                        b.log(f"pool 1 at {lat} ms: ~{est:.0f}s for {a.images} images; scrubbing the first {images}")
                unl[pool] = b.run(lat, pool, 0.0, images, note)
            if a.no_limit_runs:
                continue
            for pool in sorted(a.pools):
                limit = a.limit_0ms if lat == 0 else a.limit_20ms
                rate = unl[pool].deletes_per_s
                if rate < 1.25 * limit:  # would not bind: half the unlimited rate, rounded down to 5
                    limit = max(1.0, 5 * math.floor(rate / 2 / 5) or math.floor(rate / 2))
                images = min(a.images, max(50, math.ceil(limit * a.limit_seconds / BLOBS_PER_IMAGE)))
                b.run(lat, pool, limit, images)
        if a.profile:
            for spec in a.profile_configs.split(","):
                lat, pool = (int(x) for x in spec.split(":"))
                images = min(a.images, 1000 if lat else 2000)
                parts = []
                if shutil.which("py-spy"):
                    path = str(b.work / f"pyspy-{lat}ms-p{pool}.txt")
                    run = b.run(lat, pool, 0.0, images, pyspy=path)
                    parts.append(pyspy_summary(path, images, run))
                path = str(b.work / f"profile-{lat}ms-p{pool}.pstats")
                run = b.run(lat, pool, 0.0, images, profile=path)
                parts.append(profile_summary(path, images, run))
                profiles.append((f"{lat} ms latency, pool {pool}, {images} images", "\n\n".join(parts)))
    finally:
        b.cleanup()
    text, ok = report(b, started)
    print()
    print(text)
    after = dockyard_revision()
    if after != revision:
        print(f"WARNING: dockyard's source changed during the benchmark ({revision} -> {after}): "
              "runs before and after the change measured different code")
    for title, body in profiles:
        print(f"\nprofile: {title}\n{body}")
    if a.json:
        Path(a.json).write_text(json.dumps([{"latency_ms": r.latency_ms, "pool": r.pool, "limit": r.limit,
                                             "images": r.images, "note": r.note, "problems": r.problems, **r.result}
                                            for r in b.runs], indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
