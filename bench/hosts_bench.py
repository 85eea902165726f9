"""Host-aware images (issue 12): inventories, managed deletes across hosts, agent memory.

    python bench/hosts_bench.py [--quick] [--backend sqlite|postgres] [--poll-interval 1]

1. One host reports an inventory of 10,000 images (``PUT /admin/v1/hosts/H/inventory``): first
   report (all new), a report where every image changed (last_used), an unchanged one.
   Request wall time on loopback (an upper bound of the server's time) and the server
   process's CPU seconds. Target: under 1 s.
2. Three real ``dockyard agent`` processes (``directory`` runtime), each holding 1,000
   managed images (laid out on disk as the agent lays them out); 1,000 deletes per host are
   queued through the admin API (three clients at once), and each delete's latency is taken,
   on the registry's clock, from the moment it was queued (``queued_at`` of the answer) to the
   registry's log line of the host's confirmation (JSON log, milliseconds). Target: p50 <= poll interval + 100 ms.
3. The agent's peak RSS (VmHWM) after reporting an inventory of 1,000 and of 10,000 images:
   the inventory is streamed, so memory should not grow with it.
"""

from __future__ import annotations

import argparse
import calendar
import hashlib
import re
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import cpu_seconds  # noqa: E402
from tests.e2e.hosts_support import AgentProcess, wait_for  # noqa: E402
from tests.support import postgres_database, start_server  # noqa: E402


def lay_out(images_dir: Path, repo: str, n: int, managed: bool = True) -> list[str]:
    """``n`` images as the agent and its directory runtime keep them (index, tar, record)."""
    digests = []
    for d in ("runtime", "tars", "state", "tmp", "containers"):
        (images_dir / d).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        digest = "sha256:" + hashlib.sha256(f"{repo}:{i}".encode()).hexdigest()
        key = digest.replace(":", "-")
        layout = images_dir / "runtime" / key
        (layout / "blobs" / "sha256").mkdir(parents=True)
        (layout / "blobs" / "sha256" / digest[7:]).write_bytes(b"{}")
        (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
            "digest": digest, "annotations": {"dev.dockyard.repository": repo, "dev.dockyard.tag": f"t{i}",
                                              "dev.dockyard.bytes": "4096"}}]}))
        (images_dir / "tars" / f"{key}.tar").write_bytes(b"\0" * 512)
        (images_dir / "state" / f"{key}.json").write_text(json.dumps({
            "repository": repo, "tag": f"t{i}", "digest": digest, "managed": managed, "bytes": 4096,
            "pulled_at": time.time(), "last_used": None}))
        digests.append(digest)
    return digests


def bench_inventory(server, n: int) -> list[tuple]:
    c = httpx.Client(base_url=server.url, timeout=120)
    c.post("/admin/v1/hosts/inv")
    images = [{"repository": f"team/r{i % 100}", "tag": f"t{i}", "digest": f"sha256:{i:064x}", "managed": i % 2 == 0,
               "bytes": 1000 + i, "pulled_at": 1.0, "last_used": None, "containers": []} for i in range(n)]
    rows = []
    for label, change in (("first report (all new)", None), ("every image changed", 5.0), ("unchanged", None)):
        if change is not None:
            for img in images:
                img["last_used"] = change
        body = b"".join(json.dumps(i).encode() + b"\n" for i in images)
        cpu0, t0 = cpu_seconds([server.proc.pid]), time.perf_counter()
        r = c.put("/admin/v1/hosts/inv/inventory", content=body)
        wall, cpu = time.perf_counter() - t0, cpu_seconds([server.proc.pid]) - cpu0
        assert r.status_code == 200, r.text
        rows.append((label, n, wall, cpu, r.json()))
    c.close()
    return rows


def bench_deletes(server, root: Path, per_host: int, poll: float) -> dict:
    agents, digests = [], {}
    for h in ("d1", "d2", "d3"):
        token = httpx.post(f"{server.url}/admin/v1/hosts/{h}").json()["token"]
        images_dir = root / h / "images"
        digests[h] = lay_out(images_dir, f"team/{h}", per_host)
        agents.append(AgentProcess(server, h, token, images_dir, [
            "--runtime", "directory", "--poll-interval", f"{poll}s", "--inventory-interval", "1h",
            "--cleanup-interval", "1h", "--log-level", "warning"], {}).start())
    for a in agents:
        wait_for(lambda: len(httpx.get(f"{server.url}/admin/v1/hosts/{a.name}/images", timeout=60).json()["images"])
                 == per_host, timeout=120, what=f"{a.name}'s inventory")
    queued: dict[tuple[str, str], float] = {}

    def enqueue(host: str):
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for d in digests[host]:
                r = c.post(f"/admin/v1/hosts/{host}/work", params={"kind": "delete", "reference": f"team/{host}@{d}"})
                assert r.status_code == 202, r.text
                queued[(host, d)] = r.json()["queued_at"]  # the registry's clock, as the confirmation's log time

    t0 = time.monotonic()
    threads = [threading.Thread(target=enqueue, args=(h,)) for h in digests]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    enqueue_seconds = time.monotonic() - t0
    finished = wait_for(lambda: f if len(f := _confirmed(server)) >= len(queued) else None, timeout=300,
                        what="every delete confirmed")
    total = max(finished.values()) - min(queued.values())
    left = sum(len(list((a.images_dir / "runtime").iterdir())) + len(list((a.images_dir / "tars").iterdir()))
               for a in agents)
    for a in agents:
        a.stop()
    lat = sorted(finished[k] - queued[k] for k in queued)
    return {"deletes": len(lat), "enqueue_seconds": enqueue_seconds, "total_seconds": total,
            "p50": statistics.median(lat), "p90": lat[int(len(lat) * 0.9)], "max": lat[-1], "files_left": left}


_DONE = re.compile(r"host (\S+): delete \S+@(sha256:[0-9a-f]{64}) done")


def _confirmed(server) -> dict[tuple[str, str], float]:
    """(host, digest) -> when the registry logged the host's confirmation (JSON log, ms)."""
    out = {}
    for line in server.log().splitlines():
        if '"hosts.service"' not in line and "dockyard.hosts.service" not in line:
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        m = _DONE.search(doc.get("msg", ""))
        if m:
            when = calendar.timegm(time.strptime(doc["time"][:19], "%Y-%m-%dT%H:%M:%S")) + int(doc["time"][20:23]) / 1000
            out[(m.group(1), m.group(2))] = when
    return out


def bench_agent_memory(server, root: Path, sizes: list[int]) -> list[tuple]:
    rows = []
    for n in sizes:
        name = f"m{n}"
        token = httpx.post(f"{server.url}/admin/v1/hosts/{name}").json()["token"]
        images_dir = root / name / "images"
        lay_out(images_dir, f"team/{name}", n, managed=False)
        agent = AgentProcess(server, name, token, images_dir, [
            "--runtime", "directory", "--poll-interval", "0.5s", "--cleanup-interval", "1h",
            "--log-level", "warning"], {}).start()
        wait_for(lambda: len(httpx.get(f"{server.url}/admin/v1/hosts/{name}/images", timeout=60).json()["images"])
                 == n, timeout=300, what=f"{name}'s inventory")
        status = Path(f"/proc/{agent.proc.pid}/status").read_text()
        hwm = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
        agent.stop()
        rows.append((n, hwm))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--poll-interval", type=float, default=1.0)
    ap.add_argument("--parts", default="inventory,deletes,memory", help="which parts to run (comma-separated)")
    args = ap.parse_args()
    inventory_n, per_host, sizes = (2000, 200, [200, 2000]) if args.quick else (10_000, 1000, [1000, 10_000])
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="hosts-bench-") as tmp, \
            (postgres_database() if args.backend == "postgres" else _null()) as url:
        root = Path(tmp)
        server = start_server(root / "data", database_url=url or "", extra_env={"DOCKYARD_LOG_LEVEL": "info",
                                                                                 "DOCKYARD_LOG_FORMAT": "json"})
        try:
            parts = set(args.parts.split(","))
            inv = bench_inventory(server, inventory_n) if "inventory" in parts else []
            dels = bench_deletes(server, root, per_host, args.poll_interval) if "deletes" in parts else None
            mem = bench_agent_memory(server, root, sizes) if "memory" in parts else []
        finally:
            server.stop()
    print(f"backend {args.backend}; load average before {load0[0]:.1f}, after {os.getloadavg()[0]:.1f} "
          f"(2 shared cores)\n")
    ok = True
    if inv:
        print("| inventory report | images | request wall s | server CPU s | result |")
        print("| --- | --- | --- | --- | --- |")
        for label, n, wall, cpu, res in inv:
            print(f"| {label} | {n:,} | {wall:.3f} | {cpu:.3f} | {res} |")
        ok_inv = max(r[3] for r in inv) < 1.0
        ok = ok and ok_inv
        print(f"target: under 1 s of server time -> {'met' if ok_inv else 'NOT met'} (server CPU; wall includes "
              f"the client and the machine's load)\n")
    if dels:
        print("| managed deletes | hosts x per host | poll s | enqueue s | all done s | p50 s | p90 s | max s | "
              "files left |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        print(f"| confirmed by agents | 3 x {per_host:,} | {args.poll_interval} | {dels['enqueue_seconds']:.2f} | "
              f"{dels['total_seconds']:.2f} | {dels['p50']:.3f} | {dels['p90']:.3f} | {dels['max']:.3f} | "
              f"{dels['files_left']} |")
        ok_del = dels["p50"] <= args.poll_interval + 0.1 and dels["files_left"] == 0
        ok = ok and ok_del
        print(f"target: p50 <= poll interval + 100 ms -> {'met' if ok_del else 'NOT met'}\n")
    if mem:
        print("| agent inventory | images | agent peak RSS MB |")
        print("| --- | --- | --- |")
        for n, hwm in mem:
            print(f"| streamed | {n:,} | {hwm / 1024:.1f} |")
        growth = (mem[-1][1] - mem[0][1]) / 1024
        ok = ok and growth < 5
        print(f"growth {mem[0][0]:,} -> {mem[-1][0]:,} images: {growth:+.1f} MB (flat: under 5 MB)")
    return 0 if ok else 1


class _null:
    def __enter__(self):
        return ""

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    raise SystemExit(main())
