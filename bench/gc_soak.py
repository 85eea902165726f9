"""Long soak of the online garbage collector: the race workload of tests/e2e/test_gc_race.py
for as long as you like, then the same end checks, printed as a table.

    python bench/gc_soak.py --seconds 600 --backend sqlite
    python bench/gc_soak.py --seconds 3600 --backend postgres --gc-processes 2

Starts a real ``dockyard serve`` (background collector every ``--gc-interval``, ``--gc-delay``
grace, ``delete_untagged``) in a temporary directory (PostgreSQL: a fresh database on
DOCKYARD_TEST_POSTGRES_URL, dropped afterwards) and runs against it, over plain HTTP:
pushers that share a pool of layers (docker protocol: HEAD, skip what exists, mount or
upload the rest, PUT the manifest), untaggers, a deleter by digest, abandoned pushes with
unlinks and repository deletes, and ``--gc-processes`` extra ``dockyard gc`` processes in a
loop. At the end: every tagged image is pulled and verified, ``dockyard gc`` runs until idle,
``dockyard fsck --verify`` (grace 0) must find nothing, and storage must hold exactly the
blobs of the kept images. Exit status 0 when every check passed (failures target: 0).

A push must finish within gc_delay/2 of its first HEAD (the protection a HEAD gives, see
registry/blobs.py stat); the table shows the push-time percentiles against that budget.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.gc_workload import RaceSettings, RaceWorkload  # noqa: E402
from tests.support import postgres_database, start_server  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=600)
    p.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--gc-delay", type=float, default=6.0, help="seconds (pushes must finish within half of it)")
    p.add_argument("--gc-interval", type=float, default=0.2)
    p.add_argument("--upload-ttl", type=float, default=None, help="default: gc-delay + 2")
    p.add_argument("--pushers", type=int, default=6)
    p.add_argument("--untaggers", type=int, default=2)
    p.add_argument("--gc-processes", type=int, default=None, help="extra `dockyard gc` loops (default: 2 on postgres)")
    p.add_argument("--pool", type=int, default=30, help="shared layers")
    p.add_argument("--storage-latency", default="", help="e.g. 5ms")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--data-dir", help="keep the data here instead of a temporary directory")
    p.add_argument("--progress", type=float, default=30.0, help="seconds between progress lines")
    args = p.parse_args(argv)

    s = RaceSettings(seconds=args.seconds, gc_delay=args.gc_delay, gc_interval=args.gc_interval,
                     upload_ttl=args.upload_ttl if args.upload_ttl is not None else args.gc_delay + 2,
                     pushers=args.pushers, untaggers=args.untaggers, pool_size=args.pool,
                     gc_processes=args.gc_processes if args.gc_processes is not None else
                     (2 if args.backend == "postgres" else 0),
                     storage_latency=args.storage_latency,
                     seed=args.seed if args.seed is not None else int(time.time()))
    tmp = None if args.data_dir else tempfile.TemporaryDirectory(prefix="dockyard-soak-")
    data_dir = Path(args.data_dir or tmp.name) / "data"
    db = postgres_database() if args.backend == "postgres" else nullcontext("")
    started = time.monotonic()
    with db as database_url:
        server = start_server(data_dir, database_url=database_url, extra_env=s.server_env())
        try:
            print(f"gc soak: {args.backend}, {s.seconds:.0f}s, gc_delay {s.gc_delay}s, interval {s.gc_interval}s, "
                  f"{s.pushers} pushers, {s.gc_processes} extra gc processes, seed {s.seed}; server {server.url}, "
                  f"data {data_dir}", flush=True)
            wl = RaceWorkload(server.url, data_dir, database_url, s, log=lambda m: print(m, flush=True))
            wl.run(s.seconds, progress_every=args.progress)
            print("workload stopped; verifying, settling, fsck ...", flush=True)
            out = wl.final_checks(server.log, settle_timeout=max(90.0, 10 * s.gc_delay))
        finally:
            server.stop()
        print()
        print(f"{'gc soak result':<40}  {args.backend}, {time.monotonic() - started:.0f}s in all")
        print(wl.summary(out, server.log()))
        problems = out.problems()
        print()
        if problems:
            print(f"FAILED: {len(problems)} check(s)")
            for name, msg in problems:
                print(f"--- {name}: {msg[:6000]}")
            print(f"server log: {server.log_path}" + (" (removed with the temporary directory; use --data-dir)"
                                                       if tmp else ""))
        else:
            print("OK: 0 failed requests, every tagged image intact, fsck clean, no garbage left")
    if tmp:
        tmp.cleanup()
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
