#!/usr/bin/env python3
"""Dashboard page times on a large registry: every page of /dashboard/ over HTTP.

    python bench/dashboard_bench.py [--manifests 100000] [--repos 1000] [--backend sqlite|postgres]
                                    [--repeat 5] [--samples 4032] [--workdir D] [--keep]

The store is the one ``bench/prune_bench.py`` builds (rows written straight into the schema,
as the push path writes them: 100,000 manifests in 1,000 repositories by default, with tags,
tag history, indexes, referrers, shared and unique layers, pull times, a few deleted tags).
Then, in this process: one run of the usage job (``lifecycle.usage.UsageSampler``, timed)
and ``--samples`` usage samples spread over the last two weeks (the plot's bound); a few
images are moved to the trash. A real ``dockyard serve`` (anonymous admin on loopback,
background jobs off) then answers each page ``--repeat`` times: median and worst wall time
(client side), the server process's CPU time per request (from /proc: what the page
costs, whatever else runs on the machine), and the page size. Page times include the server's whole request.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(ROOT / "src"), str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

import httpx  # noqa: E402

from _common import (ServerProcess, cpu_seconds, free_port, machine_info, pg_create, pg_drop, pg_url,  # noqa: E402
                     system_busy_seconds)
from prune_bench import build_store, open_registry, repo_name  # noqa: E402


def prepare(data: Path, url: str, args) -> dict:
    from dockyard.lifecycle import deletes
    from dockyard.lifecycle.rules import store_policy
    from dockyard.lifecycle.usage import UsageSampler
    from dockyard.meta.browse import BrowseStore
    from dockyard.meta.usage import Sample, UsageStore
    from dockyard.policies import Policy

    now = time.time()
    meta = build_store(data, url, args.repos, args.manifests, now)
    reg = open_registry(data, url, now)
    t0 = time.perf_counter()
    UsageSampler(reg).run()
    sampler_s = time.perf_counter() - t0
    with reg.db.write() as conn:
        store = UsageStore(conn)
        last = store.latest()
        step = 14 * 86400 / args.samples
        for i in range(args.samples):  # two weeks of growth up to the measured figures
            f = 0.6 + 0.4 * i / args.samples
            store.record(Sample(now - 14 * 86400 + i * step, int(last.blobs * f), int(last.bytes * f),
                                int(last.logical_bytes * f), last.repositories, int(last.manifests * f)), args.samples)
    trashed = 0
    for r in range(0, args.repos, max(1, args.repos // 20)):
        with reg.db.read() as conn:
            b = BrowseStore(conn)
            repo = b.repository(repo_name(r))
            images = b.images(repo.id, 0, 3)[1] if repo else []
        for image in images[1:]:
            try:
                deletes.delete_manifest(reg, repo_name(r), image.digest, "bench")
                trashed += 1
            except Exception as exc:  # an index child, or immutable: skip it
                print(f"  not trashed {repo_name(r)}@{image.digest[:19]}: {exc}")
    store_policy(reg, "keep3", Policy.parse("keep3", {"keep_tag_revisions": 3, "keep_pushed_within": "30d"}), "bench")
    reg.db.dispose()
    return {**meta, "sampler_s": sampler_s, "trashed": trashed}


def measure(server: ServerProcess, pages: list[tuple[str, str]], repeat: int) -> list[list[str]]:
    """Wall time per request (client side: depends on other load) and the server's CPU time
    per request (user + system of its process, from /proc: does not)."""
    rows = []
    pids = server.tree()
    with httpx.Client(base_url=server.base_url, timeout=300) as c:
        assert c.get("/dashboard/").status_code == 200  # the anonymous session cookie
        for label, path in pages:
            times, size, status = [], 0, 0
            cpu0 = cpu_seconds(pids)
            for _ in range(repeat):
                t0 = time.perf_counter()
                r = c.get(path)
                times.append(time.perf_counter() - t0)
                size, status = len(r.content), r.status_code
                if 'id="error"' in r.text:
                    status = f"{status} (error page)"
            cpu = (cpu_seconds(pids) - cpu0) / repeat
            rows.append([label, path[:58], str(status), f"{statistics.median(times) * 1000:.0f}",
                         f"{max(times) * 1000:.0f}", f"{cpu * 1000:.0f}", f"{size / 1024:.0f}"])
            print(f"  {label:<26} {rows[-1][3]:>7} ms", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifests", type=int, default=100_000)
    ap.add_argument("--repos", type=int, default=1_000)
    ap.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--samples", type=int, default=4032)
    ap.add_argument("--workdir")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="dashboard-bench-"))
    data = work / "data"
    url, dbname = "", None
    if args.backend == "postgres":
        dbname = f"dockyard_dash_{int(time.time())}"
        pg_create(dbname)
        url = pg_url(dbname)
    server = None
    try:
        print(f"building {args.manifests:,} manifests in {args.repos:,} repositories ({args.backend}) in {work}")
        meta = prepare(data, url, args)
        print(f"  built in {meta['build_s']:.1f} s; usage job over the whole store: {meta['sampler_s']:.2f} s; "
              f"{meta['trashed']} images trashed")
        port = free_port()
        server = ServerProcess("dockyard", [sys.executable, "-m", "dockyard", "serve", "--data-dir", str(data),
                                            "--listen", f"127.0.0.1:{port}"], port=port, log_path=work / "server.log",
                               env={**{k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")},
                                    "DOCKYARD_DATABASE_URL": url, "DOCKYARD_GC_ENABLED": "false",
                                    "DOCKYARD_SCRUB_ENABLED": "false", "DOCKYARD_USAGE_SAMPLE_INTERVAL": "0",
                                    "PYTHONPATH": f"{ROOT / 'src'}"}).start()
        big = repo_name(0)
        pages = [("overview (2 weeks plotted)", "/dashboard/"), ("overview 1y", "/dashboard/?range=1y"),
                 ("repositories by name", "/dashboard/repositories"),
                 ("repositories by bytes", "/dashboard/repositories?sort=bytes&dir=desc"),
                 ("repositories page 30", "/dashboard/repositories?sort=images&page=30"),
                 ("repositories search", "/dashboard/repositories?q=svc-09"),
                 ("repository", f"/dashboard/r/{big}"), ("repository page 4", f"/dashboard/r/{big}?page=4"),
                 ("reclaimable", "/dashboard/reclaimable"), ("history", "/dashboard/history"),
                 ("confirm restore", "/dashboard/trash/confirm?action=restore&reference=" + big + ":latest"),
                 ("admin API page", "/dashboard/api"), ("policy preview", "/dashboard/policies/keep3"),
                 ("policy preview page 10", "/dashboard/policies/keep3?page=10")]
        busy0 = system_busy_seconds()
        t0 = time.monotonic()
        rows = measure(server, pages, args.repeat)
        busy = (system_busy_seconds() - busy0) / (time.monotonic() - t0)
        print()
        print("machine: " + ", ".join(f"{k} {v}" for k, v in machine_info().items()))
        print(f"store: {meta['manifests']:,} manifests, {meta['repos']:,} repositories, {args.backend}; "
              f"usage job {meta['sampler_s']:.2f} s; {args.samples} samples; {args.repeat} requests per page")
        print(f"cores busy meanwhile (all processes, of {os.cpu_count()}): {busy:.1f}; load average "
              f"{Path('/proc/loadavg').read_text().split()[0]}")
        head = ["page", "path", "status", "median ms", "worst ms", "server CPU ms", "KiB"]
        widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
        for r in [head, ["-" * w for w in widths], *rows]:
            print("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    finally:
        if server:
            server.stop()
        if dbname:
            pg_drop(dbname)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
