"""Collector throughput on the S3 driver with 1, 2 and 3 collector processes sharing one queue.

Each configuration gets a fresh PostgreSQL database and a fresh bucket on one moto server
(no real S3 can run here; moto in server mode is the stand-in), holding ``--blobs`` garbage
blobs (default 3000, ``--quick`` 600). Then K ``python -m dockyard gc`` processes (each what
a replica's collector does: the same Collector, claiming work with ``FOR UPDATE SKIP
LOCKED``) reclaim them together, every storage call delayed by ``storage_latency`` (default
20 ms, as an object store's round trip) with ``gc_workers`` parallel deletes per process.

The garbage. A few blobs (``--template``, default 8) are made through dockyard's own code
in this process: ``registry.uploads.start/write/finish`` then ``lifecycle.deletes.unlink_blob`` (the
``DELETE /v2/<name>/blobs/<digest>`` of a client that unlinks a layer), with ``gc_delay`` 0 so
the reviews are due at once. That writes a ready ``blobs`` row, the object at
``<prefix>/blobs/sha256/<xx>/<hex>``, a ``gc_link_reviews`` entry (from the upload), a
``gc_blob_reviews`` entry (reason ``unlinked``) and a ``gc_repository_reviews`` entry. The
rest is written in bulk in exactly that shape: the template rows are read back and copied
with another digest and size (every other column as the registry wrote it), the object is
PUT at the driver's key. The bench checks the copies have the template's columns.

The timing. The K processes are started while this script holds ``LOCK TABLE
gc_blob_reviews IN ACCESS EXCLUSIVE MODE``; each imports, connects, migrates (a no-op) and
blocks in its first queue query. Once all K wait on the lock (``pg_stat_activity``) the lock
is released: that instant is t0, so interpreter start-up is not timed and the processes
start together, like replicas that were already running. The end is the latest
``gc_runs.finished_at`` of the K runs. blobs/s = blobs / (end - t0).

Checks after each run: no blob row, review entry or tombstone left; no blob object left in
the bucket; moto's request log shows exactly one DELETE per blob key (nothing deleted
twice, nothing missed; not checkable when the blobs go in DeleteObjects batches, whose keys
the log does not show); every process exited 0.

CPU. moto is one Python process (werkzeug, a thread per request, one GIL): the bench
reports its CPU use in cores over the timed interval, the collectors' CPU (from
``getrusage(RUSAGE_CHILDREN)`` minus what they had used at t0), and the whole machine's busy
cores, with the machine's busy cores measured for 1 s just before each run (other work on a
shared machine shows there). ``--workers`` adds single-collector runs with more
``gc_workers`` (``--workers 4,8,12``), which tells apart "more processes" from "more
concurrent deletes".

Usage::

    python bench/replicas_gc_bench.py                 # 3000 blobs; 1, 2, 3 collectors x 4 workers; 1 x 8, 12
    python bench/replicas_gc_bench.py --quick         # 600 blobs
    python bench/replicas_gc_bench.py --blobs 5000 --latency 20ms --collectors 1,2,3 --workers 4,8,12 --json out.json
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
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import sqlalchemy as sa  # noqa: E402

from _common import busy_cores, cpu_seconds, machine_info, system_busy_seconds  # noqa: E402
from tests.support import AWS_TEST_ENV, postgres_database, sha256, start_moto  # noqa: E402

PREFIX = "registry"
REPO = "bench/garbage"
TEMPLATE_TABLES = ("blobs", "gc_blob_reviews", "gc_link_reviews")
DELETE_LINE = re.compile(r'"DELETE (/\S+) HTTP/[\d.]+" (\d+)')
BATCH_LINE = re.compile(r'"POST (/\S+)\?delete\S* HTTP/[\d.]+" (\d+)')


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pg(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def base_env(moto, bucket: str, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")}
    env.update(moto.env(bucket, prefix=PREFIX))
    env.update(AWS_TEST_ENV)
    env.update({"DOCKYARD_DATABASE_URL": database_url, "DOCKYARD_LOG_LEVEL": "info"})
    return env


# ---- building the store ------------------------------------------------------------------

def build_store(moto, bucket: str, database_url: str, n: int, template: int, workdir: Path, seed: int) -> dict:
    """``n`` garbage blobs: ``template`` through dockyard's code, the rest copied in bulk."""
    from dockyard.config import load
    from dockyard.meta import schema
    from dockyard.lifecycle.deletes import unlink_blob
    from dockyard.registry import uploads
    from dockyard.server import build_registry
    from dockyard.storage import paths

    t0 = time.perf_counter()
    env = {k: v for k, v in base_env(moto, bucket, database_url).items() if k.startswith("DOCKYARD_")}
    env["DOCKYARD_GC_DELAY"] = "0s"
    for k, v in AWS_TEST_ENV.items():
        os.environ.setdefault(k, v)
    cfg = load(env=env, data_dir=str(workdir / "template"))
    reg = build_registry(cfg)  # migrates the fresh database
    rng = random.Random(seed)
    made = []
    try:
        for i in range(template):
            data = rng.randbytes(rng.randint(256, 2048))
            d = sha256(data)
            up = uploads.start(reg, REPO)
            up = uploads.write(reg, up, [data])
            uploads.finish(reg, REPO, up, d)
            unlink_blob(reg, REPO, d)
            made.append(d)
    finally:
        reg.db.dispose()
    engine = sa.create_engine(pg(database_url))
    tables = {name: getattr(schema, name) for name in TEMPLATE_TABLES}
    with engine.connect() as conn:
        tmpl = {}
        for name, table in tables.items():
            rows = [dict(r._mapping) for r in conn.execute(sa.select(table).where(table.c.digest.in_(made)))]
            if len(rows) != template:
                raise RuntimeError(f"template: {name} has {len(rows)} rows for {template} blobs: {rows[:3]}")
            tmpl[name] = rows[0]
        links = conn.execute(sa.select(sa.func.count()).select_from(schema.repository_blobs)).scalar()
        repo_reviews = conn.execute(sa.select(sa.func.count()).select_from(schema.gc_repository_reviews)).scalar()
        if links or not repo_reviews:
            raise RuntimeError(f"template: {links} links left, {repo_reviews} repository reviews")
    # the bulk: same rows with another digest (and size), objects at the driver's key
    rest = []
    for i in range(n - template):
        data = rng.randbytes(rng.randint(256, 2048))
        rest.append((sha256(data), data))
    s3 = moto_client(moto)

    def put(item):
        d, data = item
        s3.put_object(Bucket=bucket, Key=f"{PREFIX}/{paths.blob_key(d)}", Body=data)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, rest))
    with engine.begin() as conn:
        for name, table in tables.items():
            rows = []
            for d, data in rest:
                row = dict(tmpl[name], digest=d)
                if "size" in row:
                    row["size"] = len(data)
                rows.append(row)
            for i in range(0, len(rows), 1000):
                conn.execute(table.insert(), rows[i:i + 1000])
    with engine.connect() as conn:
        for name, table in tables.items():
            got = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()
            if got != n:
                raise RuntimeError(f"{name}: {got} rows, want {n}")
            sample = dict(conn.execute(sa.select(table).where(table.c.digest == rest[0][0])).one()._mapping)
            want = dict(tmpl[name], digest=rest[0][0])
            if "size" in want:
                want["size"] = len(rest[0][1])
            if sample != want:
                raise RuntimeError(f"{name}: bulk row {sample} differs from the template's shape {want}")
    engine.dispose()
    objects = count_blob_objects(moto, bucket)
    if objects != n:
        raise RuntimeError(f"bucket holds {objects} blob objects, want {n}")
    return {"seconds": round(time.perf_counter() - t0, 1), "template_rows": {k: _jsonable(v) for k, v in tmpl.items()}}


def _jsonable(row: dict) -> dict:
    return {k: (v if isinstance(v, (int, float, str, type(None))) else str(v)) for k, v in row.items()}


def moto_client(moto):
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1", aws_access_key_id="test",
                        aws_secret_access_key="test",
                        config=BotoConfig(s3={"addressing_style": "path"}, max_pool_connections=32))


def count_blob_objects(moto, bucket: str) -> int:
    n = 0
    for page in moto_client(moto).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{PREFIX}/blobs/"):
        n += len(page.get("Contents", []))
    return n


# ---- the store's own ceiling ---------------------------------------------------------------

_CEILING_CLIENT = r"""
import sys, threading, time, uuid
import boto3
from botocore.config import Config
url, bucket, threads, seconds, latency, start_at = sys.argv[1:7]
threads, seconds, latency, start_at = int(threads), float(seconds), float(latency), float(start_at)
counts = [0] * threads
def worker(i):
    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="test",
                      aws_secret_access_key="test", config=Config(s3={"addressing_style": "path"}))
    s3.delete_object(Bucket=bucket, Key="ceiling/warm-" + uuid.uuid4().hex)
    time.sleep(max(0.0, start_at - time.time()))
    end = start_at + seconds
    while time.time() < end:
        if latency:
            time.sleep(latency)
        s3.delete_object(Bucket=bucket, Key="ceiling/" + uuid.uuid4().hex)
        counts[i] += 1
ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
for t in ts: t.start()
for t in ts: t.join()
print(sum(counts))
"""


def store_ceiling(moto, bucket: str, processes: int, threads: int, latency: float, seconds: float = 5.0) -> dict:
    """DeleteObject calls per second moto answers to ``processes`` x ``threads`` boto3 clients that
    each sleep ``latency`` before a call: the collectors' delete workers without dockyard."""
    start_at = time.time() + 4.0  # time to import boto3 in every process
    procs = [subprocess.Popen([sys.executable, "-c", _CEILING_CLIENT, moto.url, bucket, str(threads), str(seconds),
                               str(latency), str(start_at)], stdout=subprocess.PIPE, text=True)
             for _ in range(processes)]
    time.sleep(max(0.0, start_at - time.time()))
    m0, s0, t0 = cpu_seconds([moto.proc.pid]), system_busy_seconds(), time.perf_counter()
    time.sleep(seconds)
    dt = time.perf_counter() - t0
    moto_cpu, busy = cpu_seconds([moto.proc.pid]) - m0, system_busy_seconds() - s0
    total = sum(int(p.communicate(timeout=120)[0].strip() or 0) for p in procs)
    return {"processes": processes, "threads": threads, "latency_ms": round(latency * 1000),
            "deletes_per_second": round(total / seconds, 1), "moto_cores": round(moto_cpu / dt, 2),
            "machine_busy_cores": round(busy / dt, 2)}


# ---- one timed run -------------------------------------------------------------------------

def run_collectors(moto, bucket: str, database_url: str, k: int, workers: int, latency: str, workdir: Path,
                   n: int) -> dict:
    env = base_env(moto, bucket, database_url)
    env.update({"DOCKYARD_STORAGE_LATENCY": latency, "DOCKYARD_GC_WORKERS": str(workers)})
    engine = sa.create_engine(pg(database_url))
    moto_offset = moto.log_path.stat().st_size
    baseline = busy_cores(1.0)
    lock_conn = engine.connect()
    lock_tx = lock_conn.begin()
    lock_conn.execute(sa.text("LOCK TABLE gc_blob_reviews IN ACCESS EXCLUSIVE MODE"))
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    procs = []
    for i in range(k):
        d = workdir / f"collector-{k}x{workers}-{i}"
        d.mkdir(parents=True, exist_ok=True)
        out = open(d / "report.json", "wb")
        err = open(d / "gc.log", "wb")
        p = subprocess.Popen([sys.executable, "-m", "dockyard", "gc", "--data-dir", str(d), "--output", "json"],
                             env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        procs.append((p, d, out, err))
    deadline = time.monotonic() + 120
    with engine.connect() as conn:
        while True:
            waiting = conn.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'")).scalar()
            conn.commit()  # pg_stat_activity is a snapshot per transaction
            if waiting >= k:
                break
            dead = [p for p, *_ in procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                lock_tx.rollback()
                raise RuntimeError(f"collectors did not reach the queue ({waiting}/{k} waiting; exited: "
                                   f"{[(p.pid, p.returncode) for p in dead]})")
            time.sleep(0.05)
    pids = [p.pid for p, *_ in procs]
    cpu_at_t0 = cpu_seconds(pids)
    moto_cpu0 = cpu_seconds([moto.proc.pid])
    sys0 = system_busy_seconds()
    t0_wall, t0 = time.time(), time.perf_counter()
    lock_tx.commit()  # go
    lock_conn.close()
    peak_moto = 0.0
    last_moto, last_t = moto_cpu0, t0
    while any(p.poll() is None for p, *_ in procs):
        time.sleep(0.25)
        now, mc = time.perf_counter(), cpu_seconds([moto.proc.pid])
        peak_moto = max(peak_moto, (mc - last_moto) / max(now - last_t, 1e-6))
        last_moto, last_t = mc, now
    exited = time.perf_counter() - t0
    moto_cpu = cpu_seconds([moto.proc.pid]) - moto_cpu0
    sys_cpu = system_busy_seconds() - sys0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    children_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime) - cpu_at_t0
    reports, rcs = [], []
    for p, d, out, err in procs:
        out.close()
        err.close()
        rcs.append(p.returncode)
        try:
            reports.append(json.loads((d / "report.json").read_text()))
        except json.JSONDecodeError:
            reports.append(None)
    with engine.connect() as conn:
        finished = conn.execute(sa.text("SELECT max(finished_at), count(*) FROM gc_runs WHERE job = 'gc'")).one()
        left = {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar()
                for t in ("blobs", "gc_blob_reviews", "gc_link_reviews", "gc_tombstones", "repository_blobs")}
    engine.dispose()
    span = (finished[0] - t0_wall) if finished[0] else exited
    objects_left = count_blob_objects(moto, bucket)
    with open(moto.log_path, "rb") as fh:
        fh.seek(moto_offset)
        text = fh.read().decode(errors="replace")
    deletes = Counter(path for path, _status in DELETE_LINE.findall(text)
                      if path.startswith(f"/{bucket}/{PREFIX}/blobs/"))
    per_process = [((r or {}).get("kinds", {}).get("blobs", {}).get("objects", 0)) for r in reports]
    failures = sum(((r or {}).get("totals", {}).get("failures", 0)) for r in reports)
    problems = []
    if any(rc != 0 for rc in rcs):
        problems.append(f"exit codes {rcs}")
    if any(left.values()):
        problems.append(f"left in the database: {left}")
    if objects_left:
        problems.append(f"{objects_left} blob objects left in the bucket")
    batches = [path for path, _status in BATCH_LINE.findall(text) if path.rstrip("/") == f"/{bucket}"]
    # blobs deleted in DeleteObjects batches (issue 16) do not show per key in moto's log: then
    # the empty bucket and the report's counts are the checks
    if not batches and (len(deletes) != n or any(c != 1 for c in deletes.values())):
        twice = {k: c for k, c in deletes.items() if c > 1}
        problems.append(f"moto log: {len(deletes)} blob keys deleted (want {n}); deleted more than once: "
                        f"{len(twice)} {list(twice.items())[:5]}")
    if sum(per_process) != n:
        problems.append(f"collectors report {per_process} blobs (sum {sum(per_process)}, want {n})")
    if failures:
        problems.append(f"{failures} failures reported")
    return {
        "collectors": k, "gc_workers": workers, "blobs": n, "seconds": round(span, 3),
        "exited_after": round(exited, 3), "blobs_per_second": round(n / span, 1) if span > 0 else None,
        "per_process_blobs": per_process, "runs_recorded": finished[1],
        "moto_cores": round(moto_cpu / exited, 2), "moto_peak_cores": round(peak_moto, 2),
        "collector_cores": round(children_cpu / exited, 2), "machine_busy_cores": round(sys_cpu / exited, 2),
        "machine_busy_before": round(baseline, 2), "deletes_logged": sum(deletes.values()),
        "delete_objects_calls": len(batches),
        "problems": problems,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blobs", type=int, default=None, help="garbage blobs per run (default 3000; --quick 600)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--collectors", default="1,2,3", help="collector process counts (gc_workers = first of --workers)")
    ap.add_argument("--workers", default=None, help="gc_workers values; the extra ones run with 1 collector "
                                                    "(default 4,8,12; --quick 4)")
    ap.add_argument("--latency", default="20ms", help="storage_latency of the collectors")
    ap.add_argument("--template", type=int, default=8, help="blobs made through dockyard's code per store")
    ap.add_argument("--repeat", type=int, default=1, help="runs per configuration (the median is reported)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--no-ceiling", action="store_true", help="skip the measurement of moto's own delete rate")
    args = ap.parse_args()
    n = args.blobs or (600 if args.quick else 3000)
    counts = [int(x) for x in args.collectors.split(",")]
    workers = [int(x) for x in (args.workers or ("4" if args.quick else "4,8,12")).split(",")]
    configs = [(k, workers[0]) for k in counts] + [(1, w) for w in workers[1:]]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="replicas-gc-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    log(f"machine: {info}; work dir {workdir}; {n} blobs; latency {args.latency}; configs {configs} x{args.repeat}")
    moto = start_moto(workdir)
    results, ceilings = [], []
    from dockyard.config import parse_duration

    latency_s = parse_duration(args.latency)
    try:
        if not args.no_ceiling:
            bucket = f"gcbench-{uuid.uuid4().hex[:12]}"
            moto.make_bucket(bucket)
            for k, w in configs:
                c = store_ceiling(moto, bucket, k, w, latency_s)
                ceilings.append(c)
                log(f"moto alone: {k} processes x {w} threads, {c['latency_ms']} ms before each call: "
                    f"{c['deletes_per_second']} DeleteObject/s (moto {c['moto_cores']} cores, machine "
                    f"{c['machine_busy_cores']})")
        for rep in range(args.repeat):
            for k, w in configs:
                bucket = f"gcbench-{uuid.uuid4().hex[:12]}"
                moto.make_bucket(bucket)
                with postgres_database() as database_url:
                    built = build_store(moto, bucket, database_url, n, min(args.template, n), workdir / bucket,
                                        seed=rep * 1000 + k * 10 + w)
                    log(f"store: {n} garbage blobs in {built['seconds']}s (bucket {bucket})")
                    res = run_collectors(moto, bucket, database_url, k, w, args.latency, workdir / bucket, n)
                res["repeat"] = rep
                results.append(res)
                log(f"{k} collector(s) x {w} workers: {res['blobs_per_second']} blobs/s in {res['seconds']}s "
                    f"(moto {res['moto_cores']} cores, peak {res['moto_peak_cores']}; collectors "
                    f"{res['collector_cores']}; machine {res['machine_busy_cores']}, before {res['machine_busy_before']}; "
                    f"blobs per process {res['per_process_blobs']})"
                    + (f"  PROBLEMS: {res['problems']}" if res["problems"] else ""))
    finally:
        moto.stop()
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    # the table: median per configuration
    def med(k, w, key):
        vals = [r[key] for r in results if r["collectors"] == k and r["gc_workers"] == w and r[key] is not None]
        return statistics.median(vals) if vals else None

    one = med(1, workers[0], "blobs_per_second")
    print(f"\ncollector throughput, S3 driver on moto, {n} garbage blobs, storage_latency {args.latency}, "
          f"median of {args.repeat}; nproc {info['nproc']}")
    head = (f"{'collectors':>10} {'gc_workers':>10} {'seconds':>8} {'blobs/s':>8} {'x one':>6} {'moto cores':>10} "
            f"{'moto peak':>9} {'collector cores':>15} {'machine busy':>12} {'busy before':>11}  problems")
    print(head)
    print("-" * len(head))
    for k, w in configs:
        bps = med(k, w, "blobs_per_second")
        ratio = f"{bps / one:.2f}" if bps and one else "-"
        problems = sum(len(r["problems"]) for r in results if r["collectors"] == k and r["gc_workers"] == w)
        print(f"{k:>10} {w:>10} {med(k, w, 'seconds'):>8.2f} {bps:>8.1f} {ratio:>6} {med(k, w, 'moto_cores'):>10.2f} "
              f"{med(k, w, 'moto_peak_cores'):>9.2f} {med(k, w, 'collector_cores'):>15.2f} "
              f"{med(k, w, 'machine_busy_cores'):>12.2f} {med(k, w, 'machine_busy_before'):>11.2f}  "
              f"{problems or 'none'}")
    if ceilings:
        print("\nmoto alone: boto3 DeleteObject from the same processes x threads, same sleep, no dockyard:")
        print(f"{'processes':>10} {'threads':>8} {'sleep ms':>8} {'deletes/s':>10} {'moto cores':>10} {'machine busy':>12} "
              f"{'dockyard blobs/s / this':>24}")
        for c in ceilings:
            bps = med(c["processes"], c["threads"], "blobs_per_second")
            eff = f"{bps / c['deletes_per_second']:.2f}" if bps and c["deletes_per_second"] else "-"
            print(f"{c['processes']:>10} {c['threads']:>8} {c['latency_ms']:>8} {c['deletes_per_second']:>10.1f} "
                  f"{c['moto_cores']:>10.2f} {c['machine_busy_cores']:>12.2f} {eff:>24}")
    three = med(3, workers[0], "blobs_per_second") if 3 in counts else None
    if three and one:
        verdict = "met" if three / one >= 2.5 else "NOT met"
        print(f"\ntarget 3 collectors >= 2.5x one: {three / one:.2f}x -> {verdict}")
    for r in results:
        if r["problems"]:
            print(f"PROBLEMS {r['collectors']}x{r['gc_workers']} repeat {r['repeat']}: {r['problems']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "blobs": n, "latency": args.latency,
                                               "results": results, "moto_alone": ceilings}, indent=2))
    return 1 if any(r["problems"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
