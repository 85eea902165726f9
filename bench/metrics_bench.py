#!/usr/bin/env python3
"""What the metrics cost (issue 13): per request, per scrape, and the usage query.

    python bench/metrics_bench.py [--quick] [--backend sqlite|postgres]

1. Recording one request as the request log does (in flight +1/-1, request counter, latency
   histogram, bytes in and out): microseconds per request, one process in memory against
   prometheus_client's multiprocess mode (what ``--workers N`` uses: memory-mapped files).
2. A scrape (``Metrics.render``) with 30 routes x 3 statuses recorded, in memory and in
   multiprocess mode with two worker processes' files to add up.
3. The storage usage read at scrape time (``UsageStore.totals()``, cached 30 s, and
   ``.largest(20)``, cached 5 min) on a store of N blobs in 1,000 repositories with 3 links per
   blob. CPU is this process's: for PostgreSQL the server's work shows in wall time only.

Each mode of 1 and 2 runs in its own subprocess (multiprocess mode is chosen when
prometheus_client is imported).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

ROUTES = [f"/v2/{{name}}/route{i}" for i in range(30)]


def child(mode: str, n: int) -> None:
    from dockyard.metrics import Metrics

    m = Metrics()
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        route = ROUTES[i % 30]
        status = ("200", "404", "201")[i % 3]
        m.inc("dockyard_http_requests_in_flight")
        m.inc("dockyard_http_requests_in_flight", -1)
        m.inc("dockyard_http_requests_total", method="GET", route=route, status=status)
        m.observe("dockyard_http_request_duration_seconds", 0.003, method="GET", route=route, status=status)
        m.inc("dockyard_http_received_bytes_total", 100, method="GET", route=route)
        m.inc("dockyard_http_sent_bytes_total", 1000, method="GET", route=route)
    per_request = (time.perf_counter() - t0) / n * 1e6
    cpu_per_request = (time.process_time() - c0) / n * 1e6
    t0, c0 = time.perf_counter(), time.process_time()
    scrapes = 20
    for _ in range(scrapes):
        size = len(m.render())
    print(json.dumps({"mode": mode, "us_per_request": per_request, "cpu_us_per_request": cpu_per_request,
                      "ms_per_scrape": (time.perf_counter() - t0) / scrapes * 1000,
                      "cpu_ms_per_scrape": (time.process_time() - c0) / scrapes * 1000, "bytes": size}))


def run_child(mode: str, n: int, directory: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    if directory:
        env["PROMETHEUS_MULTIPROC_DIR"] = directory
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--n", str(n)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def usage_bench(blobs: int, backend: str) -> dict:
    import sqlalchemy as sa

    from dockyard.meta.db import Database
    from dockyard.meta.schema import blobs as b, repositories as r, repository_blobs as rb
    from dockyard.meta.usage import UsageStore

    with tempfile.TemporaryDirectory() as tmp:
        if backend == "postgres":
            sys.path.insert(0, str(ROOT))
            from tests.support import postgres_database

            ctx = postgres_database()
            url = ctx.__enter__().replace("postgresql://", "postgresql+psycopg://", 1)
        else:
            ctx, url = None, f"sqlite:///{tmp}/bench.db"
        try:
            db = Database(url)
            db.migrate()
            with db.write() as conn:
                conn.execute(sa.insert(r), [{"id": i + 1, "name": f"team/r{i}", "created_at": 0.0} for i in range(1000)])
                for start in range(0, blobs, 10_000):
                    chunk = range(start, min(blobs, start + 10_000))
                    conn.execute(sa.insert(b), [{"digest": f"sha256:{i:064x}", "size": 1000 + i, "created_at": 0.0,
                                                 "state": "ready"} for i in chunk])
                    conn.execute(sa.insert(rb), [{"repository_id": (i * 7 + k * 331) % 1000 + 1,
                                                  "digest": f"sha256:{i:064x}", "created_at": 0.0}
                                                 for i in chunk for k in range(3)])
            if backend == "postgres":  # as autovacuum would have: plans from real statistics
                with db.write() as conn:
                    conn.exec_driver_sql("ANALYZE")
            out = {"blobs": blobs, "links": 3 * blobs}
            for what, read in (("totals", lambda s: s.totals()), ("largest", lambda s: s.largest(20))):
                times, cpu = [], []
                for _ in range(3):
                    t0, c0 = time.perf_counter(), time.process_time()
                    with db.read() as conn:
                        result = read(UsageStore(conn))
                    times.append(time.perf_counter() - t0)
                    cpu.append(time.process_time() - c0)
                assert result.blobs == blobs if what == "totals" else len(result) == 20
                out[what] = (min(times) * 1000, min(cpu) * 1000)
            db.dispose()
            return out
        finally:
            if ctx is not None:
                ctx.__exit__(None, None, None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer requests, smaller stores")
    ap.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.n)
    n = 20_000 if args.quick else 100_000
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    rows = [run_child("in memory (1 worker)", n, None)]
    with tempfile.TemporaryDirectory() as directory:
        run_child("worker A", n, directory)  # a second worker's files for the scrape to add up
        rows.append(run_child("multiprocess (--workers N)", n, directory))
    print(f"\n{'mode':<30} {'CPU us/request':>14} {'wall':>8} {'CPU ms/scrape':>14} {'wall':>8} {'scrape bytes':>13}")
    for row in rows:
        print(f"{row['mode']:<30} {row['cpu_us_per_request']:>14.1f} {row['us_per_request']:>8.1f} "
              f"{row['cpu_ms_per_scrape']:>14.1f} {row['ms_per_scrape']:>8.1f} {row['bytes']:>13,}")
    print(f"\nusage read at scrape time ({args.backend}; per process, totals cached 30 s, largest 5 min)")
    print(f"{'blobs':>10} {'links':>10} {'totals wall ms':>15} {'CPU ms':>7} {'largest 20 wall ms':>19} {'CPU ms':>7}")
    for blobs in ((10_000, 50_000) if args.quick else (10_000, 100_000, 300_000)):
        row = usage_bench(blobs, args.backend)
        print(f"{row['blobs']:>10,} {row['links']:>10,} {row['totals'][0]:>15.1f} {row['totals'][1]:>7.1f} "
              f"{row['largest'][0]:>19.1f} {row['largest'][1]:>7.1f}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
