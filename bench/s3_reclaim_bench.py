"""Reclaim rate of garbage blobs on S3: batched deletes (DeleteObjects) against one object per
call, with one or more collectors, on moto or on a real Ceph RADOS Gateway.

Each mode and collector count gets a fresh PostgreSQL database and a fresh bucket holding
``--blobs`` garbage blobs (default 20,000), built exactly as ``replicas_gc_bench.py`` builds
them (a few through dockyard's own push and ``DELETE /v2/<name>/blobs/<digest>`` code, the rest
copied in that shape: a ready ``blobs`` row, a link review, a blob review and the object at the
driver's key). Then ``--collectors`` collector processes reclaim them, ``gc_workers`` 4, the
default ``gc_batch_size`` and no rate limit unless given.

The store (``--store``):

- ``moto`` (default): one moto server (moto in server mode, one Python process), every storage
  call of the collectors delayed by ``storage_latency`` (default 20 ms, an object store's round
  trip).
- ``ceph``: a throwaway single-node Ceph cluster with a RADOS Gateway started by
  ``scripts/ceph-rgw start`` in a temporary directory (memstore OSD, loopback only) and stopped
  at the end by ``scripts/ceph-rgw stop`` (by the PIDs it recorded). A real S3 server: no added
  latency unless ``--latency`` is given.

The collectors (``--collectors N``, or a list ``1,3`` for several runs against one store): N
child processes, each what a replica's collector does (``Collector.for_registry(reg).run()``
built from the same ``DOCKYARD_*`` settings as ``dockyard gc``), sharing the database and the
bucket; they claim review entries and tombstones with ``FOR UPDATE SKIP LOCKED`` and so share
the work. Per-replica blobs/s is the total rate divided by N.

Pushes during the run (``--push-rate R``, default 0 = the registry is idle): a thread of this
script pushes R small blobs per second through dockyard's upload code (``uploads.start/write/
finish``, another repository, the default ``gc_delay``) into the same database and bucket while
the collectors run. Those blobs are live: the checks require every one of them to survive.

The modes (``--modes``, default both, in one run):

- ``batched``: the collector as it ships: blob tombstones go in ``delete_many`` batches (one
  DeleteObjects of up to 1,000 keys per call).
- ``per-object``: the same collector on the same driver wrapped so that it exposes only
  ``delete``: one DeleteObject per blob, as before issue 16. ``--per-object-blobs`` runs this
  mode on fewer blobs (it is 10x slower), a rate being a rate.

Timing as in replicas_gc_bench: the children are started while this script holds ``LOCK TABLE
gc_blob_reviews IN ACCESS EXCLUSIVE MODE``; once all wait on the lock it is released (t0:
interpreter start-up is not timed); the end is the latest ``gc_runs.finished_at`` of the run.

The store probe (skip with ``--no-probe``): before the runs, 2,000 small objects are PUT and
deleted again with DeleteObjects of ``--probe-keys`` keys (default 50, what one delete worker of
a collector sends with the default ``gc_batch_size`` 200 and ``gc_workers`` 4) from 4 threads,
no added latency: the store's time per DeleteObjects and its ceiling in keys/s, against which
the collectors' rate tells whether the store or the collectors' database work bounds it.

Reported per run: blobs reclaimed per second (total and per collector); CPU seconds per
reclaimed blob of the collectors (user + system, from t0) and of the store's processes (moto,
or ceph-mon + ceph-osd + radosgw); storage calls the collectors made (counted by the latency
wrapper, so only with a latency) and the DeleteObjects requests in the store's request log; the
projection for 1,000,000 blobs at that rate (issue 17's goal: <= 10 minutes with three
replicas while pushes continue). Checks: no garbage blob row, review entry or tombstone left,
no garbage object left in the bucket, every pushed blob's row and object still there, the
reports count every blob once, no failures, every collector exited 0.

Usage::

    python bench/s3_reclaim_bench.py                                  # moto, 20,000 blobs, both modes
    python bench/s3_reclaim_bench.py --blobs 20000 --per-object-blobs 4000 --json out.json
    python bench/s3_reclaim_bench.py --store ceph --modes batched --collectors 1,3 --push-rate 5
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

MODES = ("batched", "per-object")
STORES = ("moto", "ceph")
TABLES_LEFT = ("blobs", "gc_blob_reviews", "gc_link_reviews", "gc_tombstones", "repository_blobs")
BATCH_LINE = re.compile(r'"POST (/[^\s?]+)/?\?delete\S* HTTP/[\d.]+" (\d+)')
LIVE_REPO = "bench/live"


class PerObject:
    """The driver with ``delete`` alone: the collector then deletes one object per call."""

    def __init__(self, inner):
        self.inner = inner

    def delete(self, key: str) -> None:
        self.inner.delete(key)


class Timed:
    """Times the deletes the collector sends to ``inner`` (one object per call): calls and the
    seconds spent in them, summed over the delete workers."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = 0
        self.keys = 0
        self.seconds = 0.0
        self.lock = threading.Lock()

    def _timed(self, fn, arg, keys: int):
        t = time.perf_counter()
        try:
            return fn(arg)
        finally:
            dt = time.perf_counter() - t
            with self.lock:
                self.calls += 1
                self.keys += keys
                self.seconds += dt

    def delete(self, key: str) -> None:
        return self._timed(self.inner.delete, key, 1)

    def stats(self) -> dict:
        return {"calls": self.calls, "keys": self.keys, "seconds": round(self.seconds, 3)}


class TimedBatched(Timed):
    """:class:`Timed` with ``delete_many`` too: one DeleteObjects per call."""

    def delete_many(self, keys):
        keys = list(keys)
        return self._timed(self.inner.delete_many, keys, len(keys))


# ---- the stores -----------------------------------------------------------------------------

class Store:
    """moto or the Ceph gateway behind one interface: the env of a client, a boto3 client,
    the processes whose CPU counts, the request log, stop."""

    name = "?"
    url = ""
    aws_env: dict = {}

    def env(self, bucket: str, prefix: str = "") -> dict:
        return {"DOCKYARD_STORAGE": "s3", "DOCKYARD_S3_ENDPOINT_URL": self.url, "DOCKYARD_S3_BUCKET": bucket,
                "DOCKYARD_S3_PREFIX": prefix, "DOCKYARD_S3_REGION": "us-east-1", "DOCKYARD_S3_PATH_STYLE": "true",
                **self.aws_env}

    def client(self):
        import boto3
        from botocore.config import Config as BotoConfig

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id=self.aws_env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.aws_env["AWS_SECRET_ACCESS_KEY"],
                            config=BotoConfig(s3={"addressing_style": "path"}, max_pool_connections=32))

    def make_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def pids(self) -> list[int]:
        raise NotImplementedError

    @property
    def log_path(self) -> Path:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class MotoStore(Store):
    name = "moto"

    def __init__(self, workdir: Path):
        from tests.support import AWS_TEST_ENV, start_moto

        self.moto = start_moto(workdir)
        self.url = self.moto.url
        self.proc = self.moto.proc
        self.aws_env = dict(AWS_TEST_ENV)

    def pids(self) -> list[int]:
        return [self.moto.proc.pid]

    @property
    def log_path(self) -> Path:
        return self.moto.log_path

    def stop(self) -> None:
        self.moto.stop()


class CephStore(Store):
    name = "ceph"

    def __init__(self, workdir: Path):
        from tests.support import start_ceph_rgw

        self.directory = workdir / "ceph"
        self.gw = start_ceph_rgw(self.directory)  # its daemons also stop if this process dies
        self.url = self.gw.url
        self.aws_env = dict(self.gw.aws_env)
        self.startup_seconds = self.gw.startup_seconds

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.directory / "pids").read_text().split()]
        except (OSError, ValueError):
            return []

    @property
    def log_path(self) -> Path:
        return self.gw.log_path

    def stop(self) -> None:
        self.gw.stop()  # scripts/ceph-rgw stop DIR: the daemons of DIR/pids, by PID


def use_store(store: Store) -> None:
    """Point replicas_gc_bench's store helpers (written for moto's fixed keys) at ``store``."""
    import replicas_gc_bench

    replicas_gc_bench.moto_client = lambda _s: store.client()
    os.environ.update(store.aws_env)  # build_store's registry takes the AWS chain from here


def collector_env(store: Store, bucket: str, database_url: str) -> dict[str, str]:
    from replicas_gc_bench import PREFIX

    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")}
    env.update(store.env(bucket, prefix=PREFIX))
    env.update({"DOCKYARD_DATABASE_URL": database_url, "DOCKYARD_LOG_LEVEL": "info"})
    return env


def batch_requests(store: Store, bucket: str, offset: int) -> int:
    """DeleteObjects requests on ``bucket`` in the store's request log after byte ``offset``."""
    try:
        with open(store.log_path, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode(errors="replace")
    except OSError:
        return -1
    return sum(1 for path, _status in BATCH_LINE.findall(text) if path == f"/{bucket}")


def log_size(store: Store) -> int:
    try:
        return store.log_path.stat().st_size
    except OSError:
        return 0


def probe_store(store: Store, keys_per_call: int, threads: int = 4, objects: int = 2000) -> dict:
    """The store's DeleteObjects time for ``keys_per_call`` keys, from ``threads`` threads, no
    added latency; and its ceiling in keys per second at that concurrency."""
    bucket = f"probe-{uuid.uuid4().hex[:12]}"
    store.make_bucket(bucket)
    s3 = store.client()
    keys = [f"probe/{uuid.uuid4().hex}" for _ in range(objects)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=os.urandom(1024)), keys))
    put_s = time.perf_counter() - t0
    batches = [keys[i:i + keys_per_call] for i in range(0, len(keys), keys_per_call)]
    times = []

    def delete(batch):
        t = time.perf_counter()
        r = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
        times.append(time.perf_counter() - t)
        return len(r.get("Errors", []))

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        errors = sum(pool.map(delete, batches))
    wall = time.perf_counter() - t0
    left = sum(len(p.get("Contents", [])) for p in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket))
    times.sort()
    return {"objects": objects, "put_per_second": round(objects / put_s, 1), "keys_per_call": keys_per_call,
            "threads": threads, "calls": len(batches), "call_ms_median": round(statistics.median(times) * 1000, 1),
            "call_ms_p90": round(times[int(len(times) * 0.9)] * 1000, 1),
            "keys_per_second": round(objects / wall, 1), "errors": errors, "left": left}


# ---- pushes during the run ------------------------------------------------------------------

class Pusher(threading.Thread):
    """Pushes ``rate`` small blobs per second through dockyard's upload code until stopped."""

    def __init__(self, store: Store, bucket: str, database_url: str, rate: float, workdir: Path, seed: int):
        super().__init__(daemon=True)
        from dockyard.config import load
        from dockyard.server import build_registry

        env = {k: v for k, v in collector_env(store, bucket, database_url).items() if k.startswith("DOCKYARD_")}
        self.reg = build_registry(load(env=env, data_dir=str(workdir / "pusher")))
        self.rate = rate
        self.rng = random.Random(seed)
        self.stopping = threading.Event()
        self.digests: list[str] = []
        self.latencies: list[float] = []
        self.errors: list[str] = []

    def run(self) -> None:
        from dockyard.registry import uploads
        from tests.support import sha256

        start = time.perf_counter()
        i = 0
        while not self.stopping.is_set():
            due = start + i / self.rate
            wait = due - time.perf_counter()
            if wait > 0 and self.stopping.wait(wait):
                break
            i += 1
            data = self.rng.randbytes(self.rng.randint(512, 4096))
            d = sha256(data)
            t = time.perf_counter()
            try:
                up = uploads.start(self.reg, LIVE_REPO)
                up = uploads.write(self.reg, up, [data])
                uploads.finish(self.reg, LIVE_REPO, up, d)
                self.digests.append(d)
                self.latencies.append(time.perf_counter() - t)
            except Exception as e:  # counted and reported, the run goes on
                self.errors.append(f"{type(e).__name__}: {e}"[:300])

    def stop(self) -> None:
        self.stopping.set()
        self.join(60)
        self.reg.db.dispose()


# ---- the collector --------------------------------------------------------------------------

def child(mode: str, data_dir: str) -> int:
    """The collector process: ``dockyard gc`` with the storage of ``mode``; prints its report
    and the storage calls it made as JSON."""
    from dockyard.config import load
    from dockyard.lifecycle.collector import Collector
    from dockyard.logsetup import setup
    from dockyard.server import build_registry

    cfg = load(data_dir=data_dir)
    setup(cfg.log_level)
    reg = build_registry(cfg)
    latency = reg.storage.inner  # CheckedDriver(LatencyDriver(S3Driver)) when storage_latency > 0
    collector = Collector.for_registry(reg)
    timed = Timed(PerObject(reg.storage)) if mode == "per-object" else TimedBatched(reg.storage)
    collector.storage = timed
    t0 = time.perf_counter()
    report = collector.run()
    wall = time.perf_counter() - t0
    print(json.dumps({"report": report.as_dict(), "calls": dict(getattr(latency, "calls", {})),
                      "deletes": {**timed.stats(), "run_seconds": round(wall, 3)}}))
    return 0


def run_one(store: Store, bucket: str, database_url: str, mode: str, n: int, k: int, latency: str | None,
            workers: int, extra: dict[str, str], push_rate: float, workdir: Path, seed: int) -> dict:
    import sqlalchemy as sa
    from _common import cpu_seconds
    from replicas_gc_bench import count_blob_objects, pg

    env = collector_env(store, bucket, database_url)
    env.update({"DOCKYARD_GC_WORKERS": str(workers), **extra})
    if latency:
        env["DOCKYARD_STORAGE_LATENCY"] = latency
    pusher = Pusher(store, bucket, database_url, push_rate, workdir, seed) if push_rate > 0 else None
    engine = sa.create_engine(pg(database_url))
    lock_conn = engine.connect()
    lock_tx = lock_conn.begin()
    lock_conn.execute(sa.text("LOCK TABLE gc_blob_reviews IN ACCESS EXCLUSIVE MODE"))
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    procs = []
    for i in range(k):
        d = workdir / f"collector-{mode}-{k}-{i}"
        d.mkdir(parents=True, exist_ok=True)
        out, err = open(d / "report.json", "wb"), open(d / "gc.log", "wb")
        p = subprocess.Popen([sys.executable, __file__, "--child", mode, "--data-dir", str(d)], env=env,
                             stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        procs.append((p, d, out, err))
    deadline = time.monotonic() + 180
    with engine.connect() as conn:
        while True:
            waiting = conn.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'")).scalar()
            conn.commit()
            if waiting >= k:
                break
            dead = [(p.pid, p.returncode) for p, *_ in procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                lock_tx.rollback()
                for p, *_ in procs:
                    if p.poll() is None:
                        p.kill()
                raise RuntimeError(f"the collectors did not reach the queue ({waiting}/{k}; exited {dead}): "
                                   f"{(procs[0][1] / 'gc.log').read_text()[-2000:]}")
            time.sleep(0.05)
    pids = [p.pid for p, *_ in procs]
    cpu0, store0 = cpu_seconds(pids), cpu_seconds(store.pids())
    log0 = log_size(store)
    t0_wall, t0 = time.time(), time.perf_counter()
    lock_tx.commit()  # go
    lock_conn.close()
    if pusher:
        pusher.start()
    for p, *_ in procs:
        p.wait()
    exited = time.perf_counter() - t0
    if pusher:
        pusher.stop()
    store_cpu = cpu_seconds(store.pids()) - store0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    collector_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime) - cpu0
    reports, rcs, calls, deletes = [], [], {}, []
    for p, d, out, err in procs:
        out.close()
        err.close()
        rcs.append(p.returncode)
        try:
            got = json.loads((d / "report.json").read_text())
        except json.JSONDecodeError:
            got = {"report": {}, "calls": {}}
        reports.append(got["report"])
        deletes.append(got.get("deletes", {}))
        for key, c in got["calls"].items():
            calls[key] = calls.get(key, 0) + c
    pushed = pusher.digests if pusher else []
    live = "digest IS NULL OR digest <> ALL(:pushed)"
    with engine.connect() as conn:
        finished, runs = conn.execute(sa.text("SELECT max(finished_at), count(*) FROM gc_runs WHERE job = 'gc'")).one()
        left = {t: conn.execute(sa.text(f"SELECT count(*) FROM {t} WHERE {live}"), {"pushed": pushed}).scalar()
                for t in TABLES_LEFT}
        pushed_rows = conn.execute(sa.text("SELECT count(*) FROM blobs WHERE digest = ANY(:pushed)"),
                                   {"pushed": pushed}).scalar()
    engine.dispose()
    span = (finished - t0_wall) if finished else exited
    per_process = [r.get("kinds", {}).get("blobs", {}).get("objects", 0) for r in reports]
    reclaimed = sum(per_process)
    failures = sum(r.get("totals", {}).get("failures", 0) for r in reports)
    objects_left = count_blob_objects(store, bucket)  # garbage + pushed blob objects
    problems = []
    if any(rc != 0 for rc in rcs):
        problems.append(f"exit codes {rcs}: {(procs[0][1] / 'gc.log').read_text()[-1000:]}")
    if any(left.values()):
        problems.append(f"left in the database: {left}")
    if objects_left != len(pushed):
        problems.append(f"{objects_left} blob objects in the bucket, want the {len(pushed)} pushed")
    if pushed_rows != len(pushed):
        problems.append(f"{pushed_rows} rows of the {len(pushed)} pushed blobs left")
    if reclaimed != n:
        problems.append(f"the reports count {per_process} blobs (sum {reclaimed}), want {n}")
    if failures:
        problems.append(f"{failures} failures reported")
    if pusher and pusher.errors:
        problems.append(f"{len(pusher.errors)} pushes failed: {pusher.errors[:3]}")
    bps = n / span
    # where a collector's time goes: its run (wall, from its own clock, start-up and lock wait
    # included) against the time its delete workers spent inside delete / delete_many calls
    # (summed over the workers, so divided by gc_workers it is the wall those calls could fill)
    dcalls = sum(d.get("calls", 0) for d in deletes)
    dsecs = sum(d.get("seconds", 0.0) for d in deletes)
    run_s = max((d.get("run_seconds", 0.0) for d in deletes), default=0.0)
    return {"store": store.name, "mode": mode, "collectors": k, "blobs": n, "seconds": round(span, 3),
            "blobs_per_second": round(bps, 1), "per_collector_blobs_per_second": round(bps / k, 1),
            "per_process_blobs": per_process, "runs_recorded": runs, "latency": latency or "0",
            "collector_cpu_s": round(collector_cpu, 2), "cpu_us_per_blob": round(collector_cpu / n * 1e6, 1),
            "store_cpu_s": round(store_cpu, 2), "store_cpu_us_per_blob": round(store_cpu / n * 1e6, 1),
            "storage_calls": calls, "delete_calls": dcalls,
            "delete_call_ms": round(dsecs / dcalls * 1000, 1) if dcalls else None,
            "delete_busy_share": round(dsecs / (workers * k) / span, 2) if span > 0 else None,
            "collector_run_seconds": run_s, "delete_objects_requests": batch_requests(store, bucket, log0),
            "pushes": len(pushed), "push_rate": push_rate,
            "push_p50_ms": round(statistics.median(pusher.latencies) * 1000, 1) if pusher and pusher.latencies else None,
            "push_max_ms": round(max(pusher.latencies) * 1000, 1) if pusher and pusher.latencies else None,
            "projection_1m_minutes": round(1e6 / bps / 60, 1), "problems": problems}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", choices=STORES, default="moto", help="moto (default) or ceph (a real RADOS Gateway)")
    ap.add_argument("--collectors", default="1",
                    help="collector processes sharing the database and bucket; a list (1,3) runs each")
    ap.add_argument("--blobs", type=int, default=20000, help="garbage blobs (default 20,000)")
    ap.add_argument("--per-object-blobs", type=int, default=None,
                    help="garbage blobs of the per-object mode (default: --blobs)")
    ap.add_argument("--modes", default=",".join(MODES), help="batched,per-object")
    ap.add_argument("--latency", default=None,
                    help="storage_latency of the collectors (default 20ms on moto, none on ceph)")
    ap.add_argument("--workers", type=int, default=4, help="gc_workers")
    ap.add_argument("--batch-size", type=int, default=None, help="gc_batch_size (default: the setting's default)")
    ap.add_argument("--rate", type=float, default=None, help="gc_max_deletes_per_second (default: unlimited)")
    ap.add_argument("--push-rate", type=float, default=0.0,
                    help="blobs pushed per second by a thread during each run (default 0: idle registry)")
    ap.add_argument("--template", type=int, default=8, help="blobs made through dockyard's code per store")
    ap.add_argument("--no-probe", action="store_true", help="skip the store's own DeleteObjects probe")
    ap.add_argument("--probe-keys", type=int, default=50, help="keys per DeleteObjects in the probe")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.data_dir)

    from _common import busy_cores, machine_info
    from replicas_gc_bench import build_store, log
    from tests.support import postgres_database

    modes = [m for m in args.modes.split(",") if m]
    counts = [int(x) for x in args.collectors.split(",") if x]
    latency = args.latency if args.latency is not None else ("20ms" if args.store == "moto" else None)
    if latency in ("0", "0s", "0ms", ""):
        latency = None
    extra = {}
    if args.batch_size:
        extra["DOCKYARD_GC_BATCH_SIZE"] = str(args.batch_size)
    if args.rate is not None:
        extra["DOCKYARD_GC_MAX_DELETES_PER_SECOND"] = str(args.rate)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="s3-reclaim-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    log(f"machine: {info}; work dir {workdir}; store {args.store}; modes {modes}; collectors {counts}; "
        f"latency {latency or 'none'}; workers {args.workers}; push rate {args.push_rate}/s")
    t = time.perf_counter()
    store = MotoStore(workdir) if args.store == "moto" else CephStore(workdir)
    log(f"{store.name} at {store.url} in {time.perf_counter() - t:.1f}s")
    use_store(store)
    results, probe = [], None
    try:
        if not args.no_probe:
            probe = probe_store(store, args.probe_keys, threads=args.workers)
            log(f"{store.name} alone: DeleteObjects of {probe['keys_per_call']} keys from {probe['threads']} threads: "
                f"median {probe['call_ms_median']} ms, p90 {probe['call_ms_p90']} ms, {probe['keys_per_second']} keys/s "
                f"(PUT {probe['put_per_second']}/s; errors {probe['errors']}, left {probe['left']})")
        i = 0
        for mode in modes:
            n = args.per_object_blobs if mode == "per-object" and args.per_object_blobs else args.blobs
            for k in counts:
                i += 1
                bucket = f"reclaim-{uuid.uuid4().hex[:12]}"
                store.make_bucket(bucket)
                with postgres_database() as database_url:
                    built = build_store(store, bucket, database_url, n, min(args.template, n), workdir / bucket,
                                        seed=i)
                    before = busy_cores(1.0)
                    log(f"{mode} x{k}: {n} garbage blobs built in {built['seconds']}s; machine busy {before:.2f} cores")
                    res = run_one(store, bucket, database_url, mode, n, k, latency, args.workers, extra,
                                  args.push_rate, workdir / bucket, seed=i)
                res["machine_busy_before"] = round(before, 2)
                results.append(res)
                log(f"{mode} x{k}: {res['blobs_per_second']} blobs/s in {res['seconds']}s (per process "
                    f"{res['per_process_blobs']}); collectors {res['cpu_us_per_blob']} us CPU/blob, {store.name} "
                    f"{res['store_cpu_us_per_blob']}; latency-wrapper calls {res['storage_calls']}; collector delete calls "
                    f"{res['delete_calls']} at {res['delete_call_ms']} ms, delete workers busy {res['delete_busy_share']}; "
                    f"DeleteObjects requests in the store's log (pushes' included) {res['delete_objects_requests']}; "
                    f"pushes {res['pushes']} (p50 {res['push_p50_ms']} ms, max {res['push_max_ms']} ms)"
                    + (f"  PROBLEMS: {res['problems']}" if res["problems"] else ""))
    finally:
        store.stop()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    pushes = (f"a pusher thread at {args.push_rate:g} blobs/s during each run" if args.push_rate > 0
              else "no pushes during the runs (idle registry)")
    print(f"\ngarbage blobs reclaimed, PostgreSQL + S3 driver on {store.name}, storage_latency {latency or 'none'}, "
          f"gc_workers {args.workers}, gc_batch_size {args.batch_size or 'default'}, rate limit {args.rate or 'none'}, "
          f"{pushes}; nproc {info['nproc']}")
    head = (f"{'store':<5} {'mode':<10} {'collectors':>10} {'blobs':>6} {'seconds':>8} {'blobs/s':>8} "
            f"{'per replica':>11} {'delete calls':>12} {'ms/call':>7} {'workers busy':>12} {'CPU ms/blob':>11} {'store CPU ms/blob':>17} "
            f"{'pushes':>6} {'1M blobs in':>11}  problems")
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{r['store']:<5} {r['mode']:<10} {r['collectors']:>10} {r['blobs']:>6} {r['seconds']:>8.1f} "
              f"{r['blobs_per_second']:>8.1f} {r['per_collector_blobs_per_second']:>11.1f} "
              f"{r['delete_calls']:>12} {r['delete_call_ms'] or 0:>7.1f} {r['delete_busy_share'] or 0:>12.2f} "
              f"{r['cpu_us_per_blob'] / 1000:>11.3f} "
              f"{r['store_cpu_us_per_blob'] / 1000:>17.3f} {r['pushes']:>6} "
              f"{r['projection_1m_minutes']:>9.1f} m  {'; '.join(r['problems']) or 'none'}")
    print("delete calls: the collectors' delete / delete_many (DeleteObjects) calls; ms/call: their mean time; "
          "workers busy: the share of the run the collectors' gc_workers spent inside those calls (1.00: the "
          "store's round trips bound the rate; well below: the collectors' database work between them does)")
    if probe:
        print(f"\n{store.name} alone (no dockyard, no added latency): DeleteObjects of {probe['keys_per_call']} keys "
              f"from {probe['threads']} threads: median {probe['call_ms_median']} ms, p90 {probe['call_ms_p90']} ms, "
              f"{probe['keys_per_second']:.0f} keys/s")
    by = {(r["mode"], r["collectors"]): r for r in results}
    for k in counts:
        if ("batched", k) in by and ("per-object", k) in by:
            b, p = by[("batched", k)], by[("per-object", k)]
            print(f"\n{k} collector(s), batched / per-object: {b['blobs_per_second'] / p['blobs_per_second']:.1f}x "
                  f"the rate, {p['cpu_us_per_blob'] / max(b['cpu_us_per_blob'], 1e-9):.1f}x less collector CPU per blob")
    if ("batched", 1) in by:
        bps = by[("batched", 1)]["blobs_per_second"]
        print(f"target >= 1,000 blobs/s with one collector: {bps:.0f} -> {'met' if bps >= 1000 else 'NOT met'}")
    if ("batched", 3) in by:
        m = by[("batched", 3)]["projection_1m_minutes"]
        print(f"issue 17, 1,000,000 garbage blobs in <= 10 min with three collectors ({pushes}): "
              f"{m:.1f} min -> {'met' if m <= 10 else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "store": store.name, "latency": latency,
                                               "workers": args.workers, "push_rate": args.push_rate,
                                               "probe": probe, "results": results}, indent=2, default=str))
    return 1 if any(r["problems"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
