"""Does a push pay for events? (issue 14)

    python bench/events_bench.py [--quick] [--backend sqlite|postgres] [--rounds 5] [--pushes 40]

Three real ``dockyard serve`` processes, each with its own data directory (SQLite) or
database (PostgreSQL), differ only in their notification endpoints:

- ``none``: no endpoint (events are still written to the outbox: they are the audit trail);
- ``two up``: two endpoints, real HTTP receivers on loopback that answer at once;
- ``two down``: two endpoints that never answer (nothing listens on their ports), retried
  with backoff all along.

Rounds alternate between the three servers (so the machine's load drifts over all of them
alike); each round is ``--pushes`` small images (config + 2 layers + manifest under a tag)
pushed by ``--clients`` threads over plain HTTP. Reported per server: pushes/s, manifest PUT
p50/p99, server CPU ms per push, and (``two up``) whether every event arrived and how long
after the last push. Target: ``two up`` and ``two down`` within noise of ``none`` (the
outbox row is written in the push's own transaction; delivery runs in the background).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import cpu_seconds, free_port, machine_info  # noqa: E402
from tests.support import image_manifest, make_config, make_layer, postgres_database, sha256, start_server  # noqa: E402
from tests.webhook_receiver import Receiver  # noqa: E402

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def push(c: httpx.Client, name: str, tag: str, seed: str) -> float:
    config = make_config(seed)
    layers = [make_layer(f"{seed}-{i}", 4096) for i in range(2)]
    for blob in [config, *layers]:
        r = c.post(f"/v2/{name}/blobs/uploads/", params={"digest": sha256(blob)}, content=blob)
        assert r.status_code == 201, r.text
    body = image_manifest(config, layers)
    t0 = time.perf_counter()
    r = c.put(f"/v2/{name}/manifests/{tag}", content=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text
    return time.perf_counter() - t0


def round_of(server, label: str, rnd: int, pushes: int, clients: int) -> tuple[float, list[float], float]:
    """(wall seconds, manifest PUT latencies, server CPU seconds) of one round."""
    latencies: list[float] = []
    lock = threading.Lock()
    todo = list(range(pushes))

    def worker(w: int):
        with httpx.Client(base_url=server.url, timeout=60) as c:
            while True:
                with lock:
                    if not todo:
                        return
                    i = todo.pop()
                lat = push(c, f"bench/{label.replace(' ', '-')}/r{w}", f"r{rnd}-{i}",
                           f"{label}-{rnd}-{i}-{os.getpid()}")
                with lock:
                    latencies.append(lat)

    cpu0 = cpu_seconds([server.proc.pid])
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, latencies, cpu_seconds([server.proc.pid]) - cpu0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--pushes", type=int, default=40)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="3 rounds of 20 pushes")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.pushes = 3, 20
    receivers = [Receiver().start(), Receiver().start()]
    down = [free_port(), free_port()]
    configs = {
        "none": {},
        "two up": {f"r{i}": {"url": r.url, "secret": "bench", "timeout": "2s"} for i, r in enumerate(receivers)},
        "two down": {f"d{i}": {"url": f"http://127.0.0.1:{p}/hook", "secret": "bench", "timeout": "2s"}
                     for i, p in enumerate(down)},
    }
    results: dict[str, dict] = {k: {"wall": 0.0, "lat": [], "cpu": 0.0, "n": 0, "rates": []} for k in configs}
    servers, dbs = {}, []
    with tempfile.TemporaryDirectory(prefix="events-bench-") as tmp:
        try:
            for label, endpoints in configs.items():
                url = ""
                if args.backend == "postgres":
                    ctx = postgres_database()
                    url = ctx.__enter__()
                    dbs.append(ctx)
                servers[label] = start_server(Path(tmp) / label.replace(" ", "-"), database_url=url, extra_env={
                    "DOCKYARD_NOTIFICATIONS": json.dumps(endpoints), "DOCKYARD_GC_ENABLED": "false",
                    "DOCKYARD_SCRUB_ENABLED": "false", "DOCKYARD_LOG_LEVEL": "warning"})
            for label, srv in servers.items():  # warm-up: connections, statement caches
                round_of(srv, label, -1, 8, args.clients)
            for rnd in range(args.rounds):
                order = list(configs) if rnd % 2 == 0 else list(reversed(configs))
                for label in order:
                    wall, lat, cpu = round_of(servers[label], label, rnd, args.pushes, args.clients)
                    r = results[label]
                    r["wall"] += wall
                    r["lat"] += lat
                    r["cpu"] += cpu
                    r["n"] += len(lat)
                    r["rates"].append(len(lat) / wall)
            t_last = time.monotonic()
            with servers["two up"].client() as c:
                expected = c.get("/admin/v1/events", params={"limit": 10000}).json()["outbox"]
            lag = None
            while time.monotonic() - t_last < 120:
                got = [len({e["id"] for e in r.events()}) for r in receivers]
                if min(got) >= expected:
                    lag = time.monotonic() - t_last
                    break
                time.sleep(0.1)
            delivered = [len({e["id"] for e in r.events()}) for r in receivers]
        finally:
            for srv in servers.values():
                srv.stop()
            for r in receivers:
                r.stop()
            for ctx in dbs:
                ctx.__exit__(None, None, None)
    base = results["none"]["n"] / results["none"]["wall"]
    print(f"events_bench: backend {args.backend}, {args.rounds} rounds x {args.pushes} pushes, "
          f"{args.clients} clients; machine {machine_info()['nproc']} cores, load {os.getloadavg()[0]:.1f}")
    print(f"{'endpoints':10} {'pushes':>6} {'pushes/s':>9} {'rounds min-max':>15} {'vs none':>8} "
          f"{'PUT p50 ms':>10} {'PUT p99 ms':>10} {'CPU ms/push':>11}")
    for label, r in results.items():
        rate = r["n"] / r["wall"]
        lat = sorted(r["lat"])
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        print(f"{label:10} {r['n']:6d} {rate:9.1f} {min(r['rates']):7.1f}-{max(r['rates']):<7.1f} "
              f"{rate / base:8.2f} {statistics.median(lat) * 1000:10.1f} {p99 * 1000:10.1f} "
              f"{r['cpu'] / r['n'] * 1000:11.1f}")
    print(f"two up: {expected} events in the outbox, delivered {delivered[0]} and {delivered[1]} (distinct); "
          + (f"all delivered {lag:.1f} s after the last push" if lag is not None else "NOT all delivered in 120 s"))
    spread = max(max(r["rates"]) for r in results.values()) / min(min(r["rates"]) for r in results.values())
    ok = all(results[k]["n"] / results[k]["wall"] >= base * 0.9 for k in ("two up", "two down")) and lag is not None
    print(f"target: with endpoints >= 0.9 x without (round-to-round spread here {spread:.2f}x): "
          f"{'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
