"""The per-replica blob cache (issue 11), side by side in one run.

1. Hot-blob pull throughput, with the cache and without: two ``dockyard serve`` processes on
   one moto server (S3 in server mode) with ``storage_latency`` added to every storage call
   (default 20 ms, an object store's round trip); one with ``cache_max_size`` 1 GiB, one with
   0 (no cache). The same ``--blobs`` blobs (default 4 x 1 MiB) are pushed to both; then
   ``--clients`` client processes (default 8) pull them round-robin for ``--seconds`` each (a warm-up pull
   first, so the cache's first miss is not timed); each client is a process with one keep-alive
   connection (stdlib http.client). Both servers run with ``--workers`` HTTP worker processes
   (default: the product's default, one per core; the table says how many). Beside pulls/s: CPU
   per pull of the server (its workers included), of the store and of the clients, which a busy
   machine does not skew. Target: >= 5x with the cache. ``--py-spy DIR`` records a profile of
   each server (workers included) while it is timed: for finding costs, not for figures (the
   sampler takes CPU too).
2. Prune of a cache of ``--entries`` entries (default 100,000 files of 1 KiB, index written in
   bulk), from above the high watermark (0.9) down to the low one (0.8): wall and peak Python
   memory (tracemalloc); again at a tenth of the entries, to show memory flat in the cache size.
   The files are synced to disk before the timing (a cache filled earlier, as a prune meets it;
   right after writing 100 MB, each unlink waits behind writeback: ~2 ms instead of ~0.05 ms).
   Also a ``clean`` of the same cache (it walks every file). Target: prune < 2 s.

Usage::

    python bench/cache_bench.py [--quick] [--latency 20ms] [--seconds 10] [--entries 100000] [--workers N]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))


from tests.support import push_blob, start_moto, start_server  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import children_of, cpu_seconds  # noqa: E402


def _puller(url: str, digests: list[str], start: int, deadline: float, out) -> None:
    """One client process: a keep-alive connection (stdlib, so the load generator costs little
    CPU), pulling ``digests`` round-robin until ``deadline``."""
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    cpu0 = sum(os.times()[:2])
    n = nbytes = 0
    k = start
    while time.time() < deadline:
        conn.request("GET", f"/v2/bench/app/blobs/{digests[k % len(digests)]}")
        r = conn.getresponse()
        body = r.read()
        assert r.status == 200
        n += 1
        nbytes += len(body)
        k += 1
    out.put((n, nbytes, sum(os.times()[:2]) - cpu0))


def pull_rate(url: str, digests: list[str], clients: int, seconds: float) -> tuple[float, float, int, float]:
    """(requests/s, MB/s, pulls, client CPU seconds) of ``clients`` client processes pulling
    ``digests`` round-robin."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    out = ctx.Queue()
    deadline = time.time() + seconds
    t0 = time.monotonic()
    procs = [ctx.Process(target=_puller, args=(url, digests, i, deadline, out)) for i in range(clients)]
    [p.start() for p in procs]
    results = [out.get() for _ in procs]
    [p.join() for p in procs]
    wall = time.monotonic() - t0
    pulls = sum(r[0] for r in results)
    return pulls / wall, sum(r[1] for r in results) / wall / 1e6, pulls, sum(r[2] for r in results)


def server_pids(server) -> list[int]:
    """The server process and the worker processes it forked."""
    return [server.proc.pid, *children_of(server.proc.pid)]


def py_spy(pid: int, seconds: float, out: Path, gil: bool = False):
    """A py-spy recording of ``pid`` and its children for ``seconds`` (collapsed stacks); with
    ``gil``, only of the thread that holds the GIL (what the Python code itself costs)."""
    import subprocess

    return subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--subprocesses", "--duration",
                             str(max(1, int(seconds))), *(["--gil"] if gil else []), "--format", "raw", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def throughput(args, work: Path) -> list[tuple]:
    moto = start_moto(work)
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    moto.make_bucket(bucket)
    blobs = [os.urandom(args.blob_kib * 1024) for _ in range(args.blobs)]
    rows = []
    servers = []
    try:
        for label, max_size in (("without cache", "0"), ("with cache", "1GiB")):
            env = {**moto.env(bucket, prefix="bench"), "DOCKYARD_STORAGE_LATENCY": args.latency,
                   "DOCKYARD_CACHE_MAX_SIZE": max_size, "DOCKYARD_GC_ENABLED": "false",
                   "DOCKYARD_SCRUB_ENABLED": "false", "DOCKYARD_LOG_LEVEL": "warning",
                   "DOCKYARD_WORKERS": str(args.workers)}
            server = start_server(work / label.replace(" ", "-"), extra_env=env)
            servers.append(server)
            with server.client() as c:
                digests = [push_blob(c, "bench/app", b) for b in blobs]
                for d in digests:  # warm-up: the cache's one miss per blob is not timed
                    assert c.get(f"/v2/bench/app/blobs/{d}").status_code == 200
            groups = [server_pids(server), [moto.proc.pid]]
            cpu0 = [cpu_seconds(g) for g in groups]
            spy = None
            if args.py_spy:
                args.py_spy.mkdir(parents=True, exist_ok=True)
                spy = py_spy(server.proc.pid, args.seconds, args.py_spy / f"{label.replace(' ', '-')}.txt",
                             args.py_spy_gil)
            rps, mbs, pulls, client_cpu = pull_rate(server.url, digests, args.clients, args.seconds)
            cpu = [(cpu_seconds(g) - c0) * 1000 / max(1, pulls) for g, c0 in zip(groups, cpu0)]
            if spy is not None:
                spy.wait()
            rows.append((label, rps, mbs, *cpu, client_cpu * 1000 / max(1, pulls)))
    finally:
        for s in servers:
            s.stop()
        moto.stop()
    return rows


def build_cache(root: Path, entries: int, entry_size: int):
    """A cache whose index holds ``entries`` ready entries with real files, written in bulk."""
    from dockyard.cache.blobcache import BlobCache

    total = entries * entry_size
    cache = BlobCache(root, lambda *a: iter(()), max_size=int(total / 0.95), high=0.9, low=0.8)
    payload = b"x" * entry_size
    rows = []
    now = time.time()
    for i in range(entries):
        digest = "sha256:" + hashlib.sha256(i.to_bytes(8, "big")).hexdigest()
        path = cache.path(digest)
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(payload)
        rows.append((digest, entry_size, "ready", now, now - entries + i, 0, 0, None))
    with cache.index.write() as c:
        c.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return cache


def timed(fn):
    tracemalloc.start()
    t0 = time.perf_counter()
    result = fn()
    wall = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, wall, peak


def prune_rows(args, work: Path) -> list[tuple]:
    from dockyard.cache import maintenance

    rows = []
    for n in (args.entries // 10, args.entries):
        root = work / f"cache-{n}"
        cache = build_cache(root, n, 1024)
        os.sync()  # a cache written earlier: unlinks do not wait behind the writeback of its fresh files
        clean, clean_wall, clean_peak = timed(lambda: maintenance.clean(cache, 3600))
        assert clean.total_files_cleaned == 0
        dry, dry_wall, _ = timed(lambda: maintenance.prune(cache, dry_run=True))  # the choice alone
        report, wall, peak = timed(lambda: maintenance.prune(cache))
        assert dry.total_files_pruned == report.total_files_pruned
        left = sum(1 for _ in (root / "blobs" / "sha256").iterdir())
        assert left == cache.index.totals()[0] == n - report.total_files_pruned
        rows.append((n, report.total_files_pruned, dry_wall, wall, peak, clean_wall, clean_peak))
        shutil.rmtree(root)
    return rows


def workers_label(workers: int) -> str:
    if workers:
        return str(workers)
    from dockyard.config import cpu_count

    return f"0 = one per core ({cpu_count()}), the default"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 s per side, 20,000 entries (unless --entries)")
    ap.add_argument("--latency", default="20ms")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--blobs", type=int, default=4)
    ap.add_argument("--blob-kib", type=int, default=1024)
    ap.add_argument("--entries", type=int, default=None, help="default 100,000")
    ap.add_argument("--workers", type=int, default=None,
                    help="HTTP worker processes of both servers; default: the product's (0 = one per core)")
    ap.add_argument("--py-spy", type=Path, default=None, metavar="DIR",
                    help="record a py-spy profile of each server while it is timed, into DIR")
    ap.add_argument("--py-spy-gil", action="store_true", help="with --py-spy: sample only the GIL holder")
    args = ap.parse_args()
    if args.workers is None:
        from dockyard.config import Config

        args.workers = Config().workers
    if args.quick:
        args.seconds = 3.0
    if args.entries is None:
        args.entries = 20_000 if args.quick else 100_000
    work = Path(tempfile.mkdtemp(prefix="cache-bench-"))
    load0 = os.getloadavg()[0]
    try:
        rows = throughput(args, work)
        prunes = prune_rows(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nHot-blob pulls: {args.blobs} blobs of {args.blob_kib} KiB, {args.clients} clients, {args.seconds:.0f} s "
          f"each, S3 (moto) + {args.latency} per storage call, server workers: {workers_label(args.workers)}")
    print(f"| {'server':<14} | {'pulls/s':>8} | {'MB/s':>7} | {'server CPU ms/pull':>18} | {'moto CPU ms/pull':>16} "
          f"| {'client CPU ms/pull':>18} |")
    print(f"| {'-' * 14} | {'-' * 8} | {'-' * 7} | {'-' * 18} | {'-' * 16} | {'-' * 18} |")
    for label, rps, mbs, server_cpu, moto_cpu, client_cpu in rows:
        print(f"| {label:<14} | {rps:>8.1f} | {mbs:>7.1f} | {server_cpu:>18.2f} | {moto_cpu:>16.2f} "
              f"| {client_cpu:>18.2f} |")
    ratio = rows[1][1] / rows[0][1] if rows[0][1] else float("inf")
    print(f"cache / no cache: {ratio:.1f}x (target >= 5x: {'met' if ratio >= 5 else 'NOT met'})")
    print("\nPrune from above the high watermark (0.9) to the low one (0.8), entries of 1 KiB")
    print(f"| {'entries':>8} | {'evicted':>8} | {'dry run s':>9} | {'prune s':>8} | {'prune peak MiB':>14} | "
          f"{'clean s':>8} | {'clean peak MiB':>14} |")
    print(f"| {'-' * 8} | {'-' * 8} | {'-' * 9} | {'-' * 8} | {'-' * 14} | {'-' * 8} | {'-' * 14} |")
    for n, evicted, dry, wall, peak, cwall, cpeak in prunes:
        print(f"| {n:>8,} | {evicted:>8,} | {dry:>9.2f} | {wall:>8.2f} | {peak / 2**20:>14.2f} | {cwall:>8.2f} | "
              f"{cpeak / 2**20:>14.2f} |")
    big = prunes[-1]
    print(f"prune of {big[0]:,} entries: {big[3]:.2f} s (target < 2 s: {'met' if big[3] < 2 else 'NOT met'}; the "
          f"choice alone, a dry run: {big[2]:.2f} s); peak memory {prunes[0][4] / 2**20:.2f} -> "
          f"{big[4] / 2**20:.2f} MiB for 10x the entries")
    print(f"load average: {load0:.1f} before, {os.getloadavg()[0]:.1f} after ({os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
