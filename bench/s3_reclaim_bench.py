"""Reclaim rate of one collector on S3: batched deletes (DeleteObjects) against one object per call.

Each mode gets a fresh PostgreSQL database and a fresh bucket on one moto server (no real
S3 can run here; moto in server mode is the stand-in) holding ``--blobs`` garbage blobs
(default 20,000), built exactly as ``replicas_gc_bench.py`` builds them (a few through
dockyard's own push and ``DELETE /v2/<name>/blobs/<digest>`` code, the rest copied in that
shape: a ready ``blobs`` row, a link review, a blob review and the object at the driver's
key). Then one collector process reclaims them, every storage call delayed by
``storage_latency`` (default 20 ms, an object store's round trip), ``gc_workers`` 4, the
default ``gc_batch_size`` and no rate limit unless given.

The modes (``--modes``, default both, in one run):

- ``batched``: the collector as it ships: blob tombstones go in ``delete_many`` batches (one
  DeleteObjects of up to 1,000 keys per call, one added latency per call).
- ``per-object``: the same collector on the same driver wrapped so that it exposes only
  ``delete``: one DeleteObject per blob, as before issue 16. ``--per-object-blobs`` runs this
  mode on fewer blobs (it is 10x slower), a rate being a rate.

The collector is this script run as a child (``--child MODE``): it builds the registry from
the same ``DOCKYARD_*`` settings as ``dockyard gc`` and runs ``Collector.for_registry(reg).run()``.
Timing as in replicas_gc_bench: the child is started while this script holds ``LOCK TABLE
gc_blob_reviews IN ACCESS EXCLUSIVE MODE``; once it waits on the lock the lock is released
(t0: interpreter start-up is not timed); the end is the run's ``gc_runs.finished_at``.

Reported per mode: blobs reclaimed per second; CPU seconds per reclaimed blob of the
collector process (user + system, from t0) and of moto; storage calls the collector made
(counted by the latency wrapper); the projection for 1,000,000 blobs at that rate. Checks:
no blob row, review entry or tombstone left, no blob object left in the bucket, the report
counts every blob, no failures.

Usage::

    python bench/s3_reclaim_bench.py                                  # 20,000 blobs, both modes
    python bench/s3_reclaim_bench.py --blobs 20000 --per-object-blobs 4000 --json out.json
    python bench/s3_reclaim_bench.py --modes batched --blobs 100000
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

MODES = ("batched", "per-object")
TABLES_LEFT = ("blobs", "gc_blob_reviews", "gc_link_reviews", "gc_tombstones", "repository_blobs")


class PerObject:
    """The driver with ``delete`` alone: the collector then deletes one object per call."""

    def __init__(self, inner):
        self.inner = inner

    def delete(self, key: str) -> None:
        self.inner.delete(key)


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
    latency = reg.storage.inner  # CheckedDriver(LatencyDriver(S3Driver)): storage_latency > 0
    collector = Collector.for_registry(reg)
    if mode == "per-object":
        collector.storage = PerObject(reg.storage)
    report = collector.run()
    print(json.dumps({"report": report.as_dict(), "calls": dict(getattr(latency, "calls", {}))}))
    return 0


def run_one(moto, bucket: str, database_url: str, mode: str, n: int, latency: str, workers: int,
            extra: dict[str, str], workdir: Path) -> dict:
    import sqlalchemy as sa
    from _common import cpu_seconds
    from replicas_gc_bench import base_env, count_blob_objects, pg

    env = base_env(moto, bucket, database_url)
    env.update({"DOCKYARD_STORAGE_LATENCY": latency, "DOCKYARD_GC_WORKERS": str(workers), **extra})
    engine = sa.create_engine(pg(database_url))
    lock_conn = engine.connect()
    lock_tx = lock_conn.begin()
    lock_conn.execute(sa.text("LOCK TABLE gc_blob_reviews IN ACCESS EXCLUSIVE MODE"))
    d = workdir / f"collector-{mode}"
    d.mkdir(parents=True, exist_ok=True)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out, err = open(d / "report.json", "wb"), open(d / "gc.log", "wb")
    proc = subprocess.Popen([sys.executable, __file__, "--child", mode, "--data-dir", str(d)], env=env,
                            stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    with engine.connect() as conn:
        while True:
            waiting = conn.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'")).scalar()
            conn.commit()
            if waiting >= 1:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                lock_tx.rollback()
                raise RuntimeError(f"the collector did not reach the queue (exit {proc.poll()}): "
                                   f"{(d / 'gc.log').read_text()[-2000:]}")
            time.sleep(0.05)
    cpu0, moto0 = cpu_seconds([proc.pid]), cpu_seconds([moto.proc.pid])
    t0_wall, t0 = time.time(), time.perf_counter()
    lock_tx.commit()  # go
    lock_conn.close()
    proc.wait()
    exited = time.perf_counter() - t0
    moto_cpu = cpu_seconds([moto.proc.pid]) - moto0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    collector_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime) - cpu0
    out.close()
    err.close()
    try:
        got = json.loads((d / "report.json").read_text())
    except json.JSONDecodeError:
        got = {"report": {}, "calls": {}}
    with engine.connect() as conn:
        finished = conn.execute(sa.text("SELECT max(finished_at) FROM gc_runs WHERE job = 'gc'")).scalar()
        left = {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar() for t in TABLES_LEFT}
    engine.dispose()
    span = (finished - t0_wall) if finished else exited
    report = got["report"]
    reclaimed = report.get("kinds", {}).get("blobs", {}).get("objects", 0)
    failures = report.get("totals", {}).get("failures", 0)
    objects_left = count_blob_objects(moto, bucket)
    problems = []
    if proc.returncode != 0:
        problems.append(f"exit code {proc.returncode}: {(d / 'gc.log').read_text()[-1000:]}")
    if any(left.values()):
        problems.append(f"left in the database: {left}")
    if objects_left:
        problems.append(f"{objects_left} blob objects left in the bucket")
    if reclaimed != n:
        problems.append(f"the report counts {reclaimed} blobs, want {n}")
    if failures:
        problems.append(f"{failures} failures reported")
    return {"mode": mode, "blobs": n, "seconds": round(span, 3), "blobs_per_second": round(n / span, 1),
            "collector_cpu_s": round(collector_cpu, 2), "cpu_us_per_blob": round(collector_cpu / n * 1e6, 1),
            "moto_cpu_s": round(moto_cpu, 2), "moto_cpu_us_per_blob": round(moto_cpu / n * 1e6, 1),
            "storage_calls": got["calls"], "projection_1m_minutes": round(1e6 / (n / span) / 60, 1),
            "problems": problems}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blobs", type=int, default=20000, help="garbage blobs (default 20,000)")
    ap.add_argument("--per-object-blobs", type=int, default=None,
                    help="garbage blobs of the per-object mode (default: --blobs)")
    ap.add_argument("--modes", default=",".join(MODES), help="batched,per-object")
    ap.add_argument("--latency", default="20ms", help="storage_latency of the collector")
    ap.add_argument("--workers", type=int, default=4, help="gc_workers")
    ap.add_argument("--batch-size", type=int, default=None, help="gc_batch_size (default: the setting's default)")
    ap.add_argument("--rate", type=float, default=None, help="gc_max_deletes_per_second (default: unlimited)")
    ap.add_argument("--template", type=int, default=8, help="blobs made through dockyard's code per store")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.data_dir)

    from _common import machine_info
    from replicas_gc_bench import build_store, log
    from tests.support import postgres_database, start_moto

    modes = [m for m in args.modes.split(",") if m]
    extra = {}
    if args.batch_size:
        extra["DOCKYARD_GC_BATCH_SIZE"] = str(args.batch_size)
    if args.rate is not None:
        extra["DOCKYARD_GC_MAX_DELETES_PER_SECOND"] = str(args.rate)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="s3-reclaim-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    log(f"machine: {info}; work dir {workdir}; modes {modes}; latency {args.latency}; workers {args.workers}")
    moto = start_moto(workdir)
    results = []
    try:
        for i, mode in enumerate(modes):
            n = args.per_object_blobs if mode == "per-object" and args.per_object_blobs else args.blobs
            bucket = f"reclaim-{uuid.uuid4().hex[:12]}"
            moto.make_bucket(bucket)
            with postgres_database() as database_url:
                built = build_store(moto, bucket, database_url, n, min(args.template, n), workdir / bucket, seed=i)
                log(f"{mode}: {n} garbage blobs built in {built['seconds']}s")
                res = run_one(moto, bucket, database_url, mode, n, args.latency, args.workers, extra, workdir / bucket)
            results.append(res)
            log(f"{mode}: {res['blobs_per_second']} blobs/s in {res['seconds']}s; collector {res['cpu_us_per_blob']} "
                f"us CPU/blob, moto {res['moto_cpu_us_per_blob']}; calls {res['storage_calls']}"
                + (f"  PROBLEMS: {res['problems']}" if res["problems"] else ""))
    finally:
        moto.stop()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    print(f"\none collector reclaiming garbage blobs, PostgreSQL + S3 driver on moto, storage_latency {args.latency}, "
          f"gc_workers {args.workers}, gc_batch_size {args.batch_size or 'default'}, "
          f"rate limit {args.rate or 'none'}; nproc {info['nproc']}")
    head = (f"{'mode':<11} {'blobs':>6} {'seconds':>8} {'blobs/s':>8} {'storage calls':>13} {'CPU ms/blob':>11} "
            f"{'moto CPU ms/blob':>16} {'1M blobs in':>11}  problems")
    print(head)
    print("-" * len(head))
    for r in results:
        calls = sum(r["storage_calls"].values()) or "?"
        print(f"{r['mode']:<11} {r['blobs']:>6} {r['seconds']:>8.1f} {r['blobs_per_second']:>8.1f} {calls:>13} "
              f"{r['cpu_us_per_blob'] / 1000:>11.3f} {r['moto_cpu_us_per_blob'] / 1000:>16.3f} "
              f"{r['projection_1m_minutes']:>9.1f} m  {'; '.join(r['problems']) or 'none'}")
    by = {r["mode"]: r for r in results}
    if "batched" in by and "per-object" in by:
        print(f"\nbatched / per-object: {by['batched']['blobs_per_second'] / by['per-object']['blobs_per_second']:.1f}x "
              f"the rate, {by['per-object']['cpu_us_per_blob'] / max(by['batched']['cpu_us_per_blob'], 1e-9):.1f}x "
              f"less collector CPU per blob")
    if "batched" in by:
        bps = by["batched"]["blobs_per_second"]
        print(f"target >= 1,000 blobs/s with one collector: {bps:.0f} -> {'met' if bps >= 1000 else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "latency": args.latency, "workers": args.workers,
                                               "results": results}, indent=2))
    return 1 if any(r["problems"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
