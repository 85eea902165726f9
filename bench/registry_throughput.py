#!/usr/bin/env python3
"""Registry throughput: dockyard side by side with the CNCF distribution registry.

Run:  python bench/registry_throughput.py [--quick]      (--help for the knobs)

Both registries run on this machine, in the same run, one after the other, each on a
fresh temporary data directory and a free port on 127.0.0.1: dockyard with its default
server configuration (``python -m dockyard serve``: SQLite + filesystem, one worker per
core, no DOCKYARD_* variables passed through), then, unless ``--extra-workers 0``, dockyard
again with ``--workers N`` (default 1: shown as the "└ dockyard --workers 1" rows), and
distribution 2.8 from
Debian's ``docker-registry`` package (``/usr/bin/docker-registry``) with a minimal
config: filesystem storage, deletes enabled, in-memory blob descriptor cache, log level
warn, access log off (dockyard also runs without an access log).

What is measured, for every registry:

1. Blob push / pull, MB/s (1 MB = 10^6 bytes), of a 1 GiB blob (256 MiB with
   ``--quick``); median of 3 different blobs (2 with ``--quick``). Push is monolithic:
   ``POST /v2/<name>/blobs/uploads/`` then ``PUT <Location>&digest=...`` with the body
   streamed from a generator (digest computed beforehand, outside the timing); the
   time runs from the POST to the 201, so it includes whatever the registry does after
   the last byte (for dockyard: fsync + rename + commit; "last byte -> 201" in the
   details). Pull is a streamed ``GET`` whose bytes are discarded. The client is
   http.client with 4 MiB writes/reads; its CPU use is printed in the details (well
   under one core, so it is not the bottleneck). Untimed: ``sync`` before each push
   and before each pull, and, before a registry's first push, writing + deleting a
   scratch file as large as its pushes (see ``_common.prefault_page_cache``: on these
   VMs a first write into never-touched memory is ~10x slower than into recycled
   memory, which would otherwise penalise whichever registry runs first).
2. Requests/s and p50/p99 latency of ``HEAD /v2/<name>/blobs/<digest>`` and of
   ``GET /v2/<name>/manifests/<tag>`` (OCI/Docker ``Accept`` header), at 1 and 32
   concurrent keep-alive connections, 5 s per run after a 1 s warm-up, median of 3
   runs (2 s, 1 run with ``--quick``). GET load comes from ``wrk -t1`` (Debian
   ``wrk``); HEAD load from ``hey -cpus 1`` (Debian ``hey``), because Debian's wrk 4.1
   never completes a HEAD response (it waits for a Content-Length body); hey reports
   latency with 0.1 ms resolution. Without those tools a Python asyncio generator is
   used instead (much weaker; printed under "machine").
3. Small-image push rate, images/s, 16 concurrent clients (threads, one keep-alive
   http.client connection each, one repository per client) for 10 s (3 s with
   ``--quick``): each image is a config blob plus 3 layers of 4 KiB of unique random
   content, each blob pushed with POST + PUT, then the manifest PUT by tag.

The ratio column is dockyard / distribution for throughputs and distribution / dockyard
for latencies, so in every row a ratio >= 1.0 means dockyard is at least as good.

Issue targets: blob push >= 3x the reference (ratio >= 3.0); small-image push >= 1.5x; every other ratio >= 1.0.
``--only push`` (or any of blob,load,push) runs only those phases.

Client and servers share the machine's cores (2 on the project machines) and results
vary from run to run by 10-30%; compare numbers within one run only.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import http.client
import json
import os
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import quote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (HOST, CpuMeter, ServerProcess, busy_cores, cpu_seconds, distribution_config, free_port,
                     machine_info, prefault_page_cache, system_busy_seconds, tool_version)  # noqa: E402

MiB = 1024 * 1024
OTHER_LOAD_WARN = 0.3  # cores used by other processes during a phase above which results are flagged
CHUNK = 4 * MiB
DISTRIBUTION_BIN = "/usr/bin/docker-registry"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MANIFEST_ACCEPT = ", ".join([
    OCI_MANIFEST,
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])


# =============================================================================================
# registries under test
# =============================================================================================

@dataclass
class Target:
    key: str            # "dockyard", "dockyard-w1", "distribution"
    label: str
    server: ServerProcess
    data_dir: Path


def start_dockyard(workdir: Path, workers: int | None) -> Target:
    key = "dockyard" if workers is None else f"dockyard-w{workers}"
    data = workdir / key
    data.mkdir()
    port = free_port()
    argv = [sys.executable, "-m", "dockyard", "serve", "--data-dir", str(data), "--listen", f"{HOST}:{port}"]
    if workers is not None:
        argv += ["--workers", str(workers)]
    # default configuration: no DOCKYARD_* settings leak in from the caller's environment
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")}
    server = ServerProcess(key, argv, port=port, log_path=workdir / f"{key}.log", env=env, cwd=workdir)
    server.start()
    expected = workers if workers is not None else len(os.sched_getaffinity(0))  # the default: one per core
    if expected > 1:
        server.wait_workers(expected)
    label = "dockyard" if workers is None else f"dockyard --workers {workers}"
    return Target(key, label, server, data)


def start_distribution(workdir: Path) -> Target:
    data = workdir / "distribution"
    data.mkdir()
    port = free_port()
    cfg = workdir / "distribution-config.yml"
    distribution_config(cfg, data, port=port, log_level="warn", access_log=False)
    server = ServerProcess("distribution", [DISTRIBUTION_BIN, "serve", str(cfg)], port=port,
                           log_path=workdir / "distribution.log", cwd=workdir)
    server.start()
    return Target("distribution", "distribution", server, data)


# =============================================================================================
# a small OCI client on http.client
# =============================================================================================

class Client:
    """One keep-alive HTTP/1.1 connection to a registry."""

    def __init__(self, port: int, timeout: float = 600):
        self.port = port
        self.timeout = timeout
        self.conn = http.client.HTTPConnection(HOST, port, timeout=timeout)

    def close(self) -> None:
        self.conn.close()

    def reconnect(self) -> None:
        self.conn.close()
        self.conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)

    def call(self, method: str, path: str, body=None, headers: dict | None = None,
             expect: tuple[int, ...] = (200,)) -> http.client.HTTPResponse:
        """Send a request and read the whole (small) response; raise on an unexpected status."""
        self.conn.request(method, path, body=body, headers=headers or {})
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status not in expect:
            raise RuntimeError(f"{method} {path} -> {resp.status} {data[:300]!r}")
        resp.body = data  # type: ignore[attr-defined]
        return resp

    def start_upload(self, repo: str) -> str:
        resp = self.call("POST", f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"}, expect=(202,))
        return _with_digest_param(resp.getheader("Location"), None)

    def push_blob(self, repo: str, data: bytes, digest: str) -> None:
        location = self.start_upload(repo)
        self.call("PUT", _with_digest_param(location, digest), body=data,
                  headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))},
                  expect=(201,))

    def put_manifest(self, repo: str, tag: str, payload: bytes) -> None:
        self.call("PUT", f"/v2/{repo}/manifests/{tag}", body=payload,
                  headers={"Content-Type": OCI_MANIFEST, "Content-Length": str(len(payload))}, expect=(201,))


def _with_digest_param(location: str | None, digest: str | None) -> str:
    """The upload URL (absolute or relative) as a request target, with ``digest`` appended."""
    if not location:
        raise RuntimeError("upload response without Location")
    parts = urlsplit(location)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    if digest:
        target += ("&" if parts.query else "?") + "digest=" + quote(digest, safe=":")
    return target


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_image(tag_seed: str, layer_size: int = 4096, layers: int = 3) -> tuple[list[tuple[bytes, str]], bytes]:
    """Unique blobs (config first) and the OCI manifest that references them."""
    layer_blobs = [os.urandom(layer_size) for _ in range(layers)]
    layer_digests = [sha256(b) for b in layer_blobs]
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Labels": {"bench": tag_seed}},
        "rootfs": {"type": "layers", "diff_ids": layer_digests},
    }, separators=(",", ":")).encode()
    config_digest = sha256(config)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": d, "size": len(b)} for b, d in zip(layer_blobs, layer_digests)],
    }, separators=(",", ":")).encode()
    return [(config, config_digest)] + list(zip(layer_blobs, layer_digests)), manifest


# =============================================================================================
# 1. big blob push / pull
# =============================================================================================

@dataclass
class BigBlob:
    size: int
    block: bytes
    digest: str
    body_sent_at: float = 0.0  # when the last byte was handed to the kernel

    @classmethod
    def make(cls, size: int) -> "BigBlob":
        assert size % CHUNK == 0
        block = os.urandom(CHUNK)
        h = hashlib.sha256()
        for _ in range(size // CHUNK):
            h.update(block)
        return cls(size, block, "sha256:" + h.hexdigest())

    def chunks(self) -> Iterator[bytes]:
        block = self.block
        for _ in range(self.size // CHUNK):
            yield block
        self.body_sent_at = time.perf_counter()  # http.client asks for more only after sendall()


@dataclass
class Transfer:
    mbps: float
    seconds: float
    client_cores: float
    server_cores: float
    other_cores: float
    tail: float = 0.0  # push: seconds from the last body byte sent to the response (server finalizing)

    def describe(self) -> str:
        tail = f" (last byte -> 201: {self.tail:.2f}s)" if self.tail else ""
        return (f"{self.mbps:,.0f} MB/s in {self.seconds:.2f}s{tail}, client {self.client_cores:.2f} cores, "
                f"server {self.server_cores:.2f} cores, other {self.other_cores:.2f} cores")


def push_big_blob(target: Target, blob: BigBlob, repo: str = "bench/big") -> Transfer:
    client = Client(target.server.port)
    try:
        with CpuMeter(target.server) as m:
            location = client.start_upload(repo)
            client.conn.request("PUT", _with_digest_param(location, blob.digest), body=blob.chunks(),
                                headers={"Content-Type": "application/octet-stream",
                                         "Content-Length": str(blob.size)})
            resp = client.conn.getresponse()
            body = resp.read()
            done = time.perf_counter()
        if resp.status != 201:
            raise RuntimeError(f"blob PUT -> {resp.status} {body[:300]!r}")
        got = resp.getheader("Docker-Content-Digest")
        if got and got != blob.digest:
            raise RuntimeError(f"registry reports digest {got}, expected {blob.digest}")
    finally:
        client.close()
    return Transfer(blob.size / m.wall / 1e6, m.wall, m.client_cores, m.server_cores, m.other_cores,
                    done - blob.body_sent_at)


def synced_write_rate(directory: str | os.PathLike, nbytes: int) -> float:
    """MB/s of writing ``nbytes`` of random data to a new file in ``directory`` and syncing it
    (as ``dd conv=fdatasync``): a push durable before its 201 cannot beat this on this disk,
    so it is printed beside the blob push row (the reference registry does not sync)."""
    block = os.urandom(CHUNK)
    path = Path(directory) / ".synced-write-rate"
    os.sync()
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(max(1, nbytes // CHUNK)):
            os.write(fd, block)
        os.fdatasync(fd)
        took = time.perf_counter() - t0
    finally:
        os.close(fd)
        os.unlink(path)
    return max(1, nbytes // CHUNK) * CHUNK / took / 1e6


def pull_big_blob(target: Target, blob: BigBlob, repo: str = "bench/big") -> Transfer:
    client = Client(target.server.port)
    buf = memoryview(bytearray(CHUNK))
    total = 0
    try:
        with CpuMeter(target.server) as m:
            client.conn.request("GET", f"/v2/{repo}/blobs/{blob.digest}")
            resp = client.conn.getresponse()
            if resp.status != 200:
                raise RuntimeError(f"blob GET -> {resp.status} {resp.read()[:300]!r}")
            while True:
                n = resp.readinto(buf)
                if not n:
                    break
                total += n
    finally:
        client.close()
    if total != blob.size:
        raise RuntimeError(f"pulled {total} bytes, expected {blob.size}")
    return Transfer(blob.size / m.wall / 1e6, m.wall, m.client_cores, m.server_cores, m.other_cores)


# =============================================================================================
# 2. request rate and latency (wrk, or a Python fallback)
# =============================================================================================

@dataclass
class LoadResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    server_cores: float
    client_cores: float
    other_cores: float


WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\nBENCHJSON {"requests":%d,"duration_us":%d,"p50_us":%.1f,"p99_us":%.1f,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def wrk_script(workdir: Path, name: str, method: str, headers: dict[str, str]) -> Path:
    lines = [f'wrk.method = "{method}"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    path = workdir / f"{name}.lua"
    path.write_text("\n".join(lines) + "\n" + WRK_DONE)
    return path


def run_wrk(target: Target, case: "LoadCase", url_path: str, connections: int, seconds: float,
            workdir: Path) -> LoadResult:
    script = wrk_script(workdir, f"{target.key}-{case.key}", case.method, case.headers)
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s", "--latency",
            "-s", str(script), f"{target.server.base_url}{url_path}"]
    out, server_cores, client_cores, other_cores = _run_tool(target, argv, seconds)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCHJSON ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    r = json.loads(line[len("BENCHJSON "):])
    errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    return LoadResult(r["requests"] / (r["duration_us"] / 1e6), r["p50_us"] / 1000, r["p99_us"] / 1000,
                      r["requests"], errors, server_cores, client_cores, other_cores)


_HEY_PCT = re.compile(r"^\s*(\d+)% in ([\d.]+) secs", re.M)
_HEY_STATUS = re.compile(r"^\s*\[(\d+)\]\s+(\d+) responses", re.M)


def run_hey(target: Target, case: "LoadCase", url_path: str, connections: int, seconds: float,
            workdir: Path) -> LoadResult:
    """hey (Go): used for HEAD because Debian's wrk 4.1 waits for a body after a HEAD response.

    hey prints latency percentiles with 0.1 ms resolution.
    """
    argv = ["hey", "-z", f"{max(1, round(seconds))}s", "-c", str(connections), "-cpus", "1", "-t", "10",
            "-disable-compression", "-m", case.method]
    for k, v in case.headers.items():
        argv += ["-H", f"{k}: {v}"]
    argv.append(f"{target.server.base_url}{url_path}")
    out, server_cores, client_cores, other_cores = _run_tool(target, argv, seconds)
    text = out.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    pct = {int(p): float(v) for p, v in _HEY_PCT.findall(text)}
    slowest = re.search(r"Slowest:\s+([\d.]+)", text)
    if 99 not in pct and slowest is not None:  # hey prints no 99% line under 100 responses
        pct[99] = float(slowest.group(1))
    if out.returncode != 0 or rps is None or 50 not in pct or 99 not in pct:
        raise RuntimeError(f"hey failed ({out.returncode}):\n{text}\n{out.stderr}")
    statuses = {int(c): int(n) for c, n in _HEY_STATUS.findall(text)}
    ok = sum(n for c, n in statuses.items() if 200 <= c < 400)
    errors = sum(statuses.values()) - ok
    err_section = text.split("Error distribution:", 1)
    if len(err_section) == 2:
        errors += sum(int(n) for n in re.findall(r"^\s*\[(\d+)\]", err_section[1], re.M))
    return LoadResult(float(rps.group(1)), pct[50] * 1000, pct[99] * 1000, sum(statuses.values()), errors,
                      server_cores, client_cores, other_cores)


def _run_tool(target: Target, argv: list[str], seconds: float
              ) -> tuple[subprocess.CompletedProcess, float, float, float]:
    """Run a load generator; also return the CPU use (cores) of the server, of the tool and of anything else."""
    pids = target.server.tree()
    s0, t0, c0, a0 = cpu_seconds(pids), time.perf_counter(), _children_cpu(), system_busy_seconds()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    wall = time.perf_counter() - t0
    server, tool, total = cpu_seconds(pids) - s0, _children_cpu() - c0, system_busy_seconds() - a0  # tool reaped
    return out, server / wall, tool / wall, max(0.0, total - server - tool) / wall


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_python_load(target: Target, case: "LoadCase", url_path: str, connections: int, seconds: float,
                    workdir: Path) -> LoadResult:
    """Fallback load generator: ``connections`` asyncio keep-alive connections, raw HTTP/1.1."""
    method, headers = case.method, case.headers
    request = (f"{method} {url_path} HTTP/1.1\r\nHost: {HOST}:{target.server.port}\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
    latencies: list[float] = []
    errors = 0

    async def worker(deadline: float) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(HOST, target.server.port)
        try:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if method != "HEAD" and length:
                    await reader.readexactly(length)
                latencies.append(time.perf_counter() - t0)
                if status >= 400:
                    errors += 1
        finally:
            writer.close()

    async def main() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(t0 + seconds) for _ in range(connections)))
        return time.perf_counter() - t0

    with CpuMeter(target.server) as m:
        wall = asyncio.run(main())
    latencies.sort()
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
    return LoadResult(len(latencies) / wall, q[49] * 1000, q[98] * 1000, len(latencies), errors,
                      m.server_cores, m.client_cores, m.other_cores)


@dataclass
class LoadCase:
    key: str
    title: str
    method: str
    headers: dict[str, str]
    path: Callable[["Fixture"], str]
    tools: tuple[str, ...]  # load generators in order of preference; "python" always works


@dataclass
class Fixture:
    repo: str
    tag: str
    layer_digest: str


LOAD_CASES = [
    # Debian's wrk 4.1 never completes a HEAD response (it waits for the Content-Length body)
    LoadCase("head_blob", "HEAD blob", "HEAD", {},
             lambda f: f"/v2/{f.repo}/blobs/{f.layer_digest}", ("hey", "python")),
    LoadCase("get_manifest", "GET manifest by tag", "GET", {"Accept": MANIFEST_ACCEPT},
             lambda f: f"/v2/{f.repo}/manifests/{f.tag}", ("wrk", "hey", "python")),
]
LOAD_TOOLS = {"wrk": run_wrk, "hey": run_hey, "python": run_python_load}


def pick_tool(case: LoadCase, python_only: bool) -> str:
    if python_only:
        return "python"
    return next(t for t in case.tools if t == "python" or shutil.which(t))


def seed_fixture(target: Target) -> Fixture:
    repo, tag = "bench/small", "latest"
    blobs, manifest = make_image("fixture")
    client = Client(target.server.port)
    try:
        for data, digest in blobs:
            client.push_blob(repo, data, digest)
        client.put_manifest(repo, tag, manifest)
        # sanity: both requests the load generator makes must succeed
        client.call("HEAD", f"/v2/{repo}/blobs/{blobs[1][1]}")
        resp = client.call("GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST_ACCEPT})
        if resp.body != manifest:  # type: ignore[attr-defined]
            raise RuntimeError("manifest GET returned other bytes than were pushed")
    finally:
        client.close()
    return Fixture(repo, tag, blobs[1][1])


# =============================================================================================
# 3. small-image push rate
# =============================================================================================

@dataclass
class PushRate:
    images_per_s: float
    images: int
    errors: int
    client_cores: float
    server_cores: float
    other_cores: float
    first_error: str = ""


def push_small_images(target: Target, clients: int, seconds: float) -> PushRate:
    counts = [0] * clients
    errors = [0] * clients
    first_error: list[str] = []
    start = threading.Barrier(clients + 1)
    deadline = [0.0]
    run_id = uuid.uuid4().hex[:8]

    def worker(n: int) -> None:
        client = Client(target.server.port, timeout=60)
        repo = f"bench/push-{n:02d}"
        i = 0
        start.wait()
        try:
            while time.perf_counter() < deadline[0]:
                blobs, manifest = make_image(f"{run_id}-{n}-{i}")
                try:
                    for data, digest in blobs:
                        client.push_blob(repo, data, digest)
                    client.put_manifest(repo, f"v{i}", manifest)
                    counts[n] += 1
                except (RuntimeError, OSError, http.client.HTTPException) as exc:
                    errors[n] += 1
                    if not first_error:
                        first_error.append(str(exc)[:300])
                    client.reconnect()
                i += 1
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(clients)]
    for t in threads:
        t.start()
    with CpuMeter(target.server) as m:
        deadline[0] = time.perf_counter() + seconds
        start.wait()
        for t in threads:
            t.join()
    total = sum(counts)
    return PushRate(total / m.wall, total, sum(errors), m.client_cores, m.server_cores, m.other_cores,
                    first_error[0] if first_error else "")


# =============================================================================================
# running everything
# =============================================================================================

@dataclass
class Settings:
    blob_bytes: int
    load_seconds: float
    warmup_seconds: float
    push_seconds: float
    push_clients: int
    blob_repeats: int = 3
    load_repeats: int = 1
    prefault: bool = True
    concurrency: tuple[int, ...] = (1, 32)
    python_only: bool = False
    only: tuple[str, ...] = ("blob", "load", "push")


@dataclass
class Results:
    metrics: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)     # per-metric detail (cpu, errors)
    raw: dict[str, object] = field(default_factory=dict)
    other: dict[str, float] = field(default_factory=dict)   # phase -> cores used by other processes (max)


def dockyard_version() -> str:
    import dockyard

    text = f"{getattr(dockyard, '__version__', '?')} from {Path(dockyard.__file__).parent}"
    try:
        root = Path(dockyard.__file__).resolve().parents[2]
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "src"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
        if head:
            text += f", git {head}" + (f" + {len(dirty.splitlines())} uncommitted file(s) under src/" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        pass
    return text


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def bench_target(target: Target, settings: Settings, blobs: list[BigBlob], workdir: Path) -> Results:
    res = Results()
    m = res.metrics

    if "blob" in settings.only and settings.prefault:
        scratch = settings.blob_bytes * len(blobs) + 512 * MiB
        took = prefault_page_cache(target.data_dir, scratch)
        log(f"[{target.label}] pre-faulted {scratch // MiB} MiB of page cache in {took:.1f}s (not timed)")
    pushes, pulls = [], []
    for i, blob in enumerate(blobs if "blob" in settings.only else []):
        repo = f"bench/big-{i}"
        log(f"[{target.label}] push {blob.size // MiB} MiB blob ({i + 1}/{len(blobs)})")
        os.sync()  # start from a clean page cache state (not timed)
        pushes.append(push_big_blob(target, blob, repo))
        os.sync()  # let write-back of the pushed blob finish before anything else is timed
        log(f"[{target.label}] pull {blob.size // MiB} MiB blob ({i + 1}/{len(blobs)})")
        pulls.append(pull_big_blob(target, blob, repo))
    if pushes:
        m["blob_push"] = statistics.median(t.mbps for t in pushes)
        m["blob_pull"] = statistics.median(t.mbps for t in pulls)
        res.other["blob push"] = max(t.other_cores for t in pushes)
        res.other["blob pull"] = max(t.other_cores for t in pulls)
        res.notes["blob_push"] = " | ".join(t.describe() for t in pushes)
        res.notes["blob_pull"] = " | ".join(t.describe() for t in pulls)
        res.raw["blob_push_runs"] = [vars(t) for t in pushes]
        res.raw["blob_pull_runs"] = [vars(t) for t in pulls]
        ceiling = synced_write_rate(target.data_dir, settings.blob_bytes)
        res.raw["synced_write_mbps"] = ceiling
        res.notes["blob_push"] += (f" | this disk's synced write rate now (write + fdatasync, same size): "
                                   f"{ceiling:,.0f} MB/s")

    fixture = seed_fixture(target) if "load" in settings.only else None
    for case in LOAD_CASES if "load" in settings.only else ():
        path = case.path(fixture)
        tool = pick_tool(case, settings.python_only)
        run_load = LOAD_TOOLS[tool]
        for conc in settings.concurrency:
            key = f"{case.key}_c{conc}"
            log(f"[{target.label}] {case.title}, {conc} connection(s), {settings.load_seconds:g}s")
            if settings.warmup_seconds:
                run_load(target, case, path, conc, settings.warmup_seconds, workdir)
            runs = [run_load(target, case, path, conc, settings.load_seconds, workdir)
                    for _ in range(settings.load_repeats)]
            m[f"{key}_rps"] = statistics.median(r.rps for r in runs)
            m[f"{key}_p50"] = statistics.median(r.p50_ms for r in runs)
            m[f"{key}_p99"] = statistics.median(r.p99_ms for r in runs)
            notes = []
            for r in runs:
                note = (f"{r.rps:,.0f} req/s, p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms ({r.requests} requests), "
                        f"client ({tool}) {r.client_cores:.2f} cores, server {r.server_cores:.2f} cores "
                        f"({r.server_cores * 1e6 / r.rps if r.rps else 0:.0f} µs CPU per request), "
                        f"other {r.other_cores:.2f} cores")
                if r.errors:
                    note += f", {r.errors} ERRORS"
                notes.append(note)
            res.notes[key] = " | ".join(notes)
            res.other[f"{case.title} c={conc}"] = max(r.other_cores for r in runs)
            res.raw[key] = [vars(r) for r in runs]

    if "push" not in settings.only:
        return res
    log(f"[{target.label}] small-image push, {settings.push_clients} clients, {settings.push_seconds:g}s")
    p = push_small_images(target, settings.push_clients, settings.push_seconds)
    m["small_push"] = p.images_per_s
    note = (f"{p.images} images, client {p.client_cores:.2f} cores, server {p.server_cores:.2f} cores "
            f"({p.server_cores * 1000 / p.images_per_s if p.images_per_s else 0:.1f} ms CPU per image), "
            f"other {p.other_cores:.2f} cores")
    if p.errors:
        note += f", {p.errors} ERRORS (first: {p.first_error})"
    res.notes["small_push"] = note
    res.raw["small_push"] = vars(p)
    res.other["small-image push"] = p.other_cores
    return res


@dataclass
class Metric:
    key: str
    title: str
    unit: str
    higher_is_better: bool
    target: float = 1.0


def metric_list(settings: Settings) -> list[Metric]:
    b = settings.blob_bytes
    size = f"{b // MiB} MiB" if b < 1024 * MiB or b % (1024 * MiB) else f"{b // (1024 * MiB)} GiB"
    med = f", median of {settings.blob_repeats}" if settings.blob_repeats > 1 else ""
    out = [Metric("blob_push", f"blob push, {size} monolithic{med}", "MB/s", True, 3.0),
           Metric("blob_pull", f"blob pull, {size}{med}", "MB/s", True)] if "blob" in settings.only else []
    for case in LOAD_CASES if "load" in settings.only else ():
        for conc in settings.concurrency:
            base = f"{case.title}, c={conc}" + (f", median of {settings.load_repeats}" if settings.load_repeats > 1 else "")
            out += [Metric(f"{case.key}_c{conc}_rps", base, "req/s", True),
                    Metric(f"{case.key}_c{conc}_p50", f"{base} p50", "ms", False),
                    Metric(f"{case.key}_c{conc}_p99", f"{base} p99", "ms", False)]
    if "push" in settings.only:
        out.append(Metric("small_push", f"small-image push, {settings.push_clients} clients", "images/s", True, 1.5))
    return out


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value:.3f} ms" if value < 10 else f"{value:.1f} ms"
    if value >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:.1f} {unit}"


def ratio_of(metric: Metric, mine: float | None, ref: float | None) -> float | None:
    if mine is None or ref is None or mine <= 0 or ref <= 0:
        return None
    return mine / ref if metric.higher_is_better else ref / mine


def render(results: dict[str, Results], labels: dict[str, str], metrics: list[Metric], info: dict[str, str]) -> None:
    ref = results.get("distribution")
    dock_keys = [k for k in results if k != "distribution"]
    rows: list[tuple[str, str, str, str, str]] = []  # metric, dockyard, distribution, ratio, style
    for metric in metrics:
        for i, k in enumerate(dock_keys):
            mine = results[k].metrics.get(metric.key)
            theirs = ref.metrics.get(metric.key) if ref else None
            r = ratio_of(metric, mine, theirs)
            name = f"{metric.title} ({metric.unit})" if i == 0 else f"  └ {labels[k]}"
            if r is None:
                ratio, style = "-", ""
            else:
                ok = r >= metric.target
                ratio = f"{r:.2f} {'✓' if ok else '✗'} (≥{metric.target:g})"
                style = "green" if ok else "red"
            rows.append((name, fmt(mine, metric.unit), fmt(theirs, metric.unit), ratio, style))

    title = "dockyard vs distribution (CNCF reference registry)"
    caption = ("ratio = dockyard / distribution; latency rows: distribution / dockyard. "
               "So ratio ≥ target (in brackets) is good in every row.")
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        Console = None  # type: ignore[assignment]
    if Console is not None:
        table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
        for col, just in (("metric", "left"), ("dockyard", "right"), ("distribution", "right"), ("ratio", "right")):
            table.add_column(col, justify=just)
        for name, a, b, c, style in rows:
            table.add_row(name, a, b, f"[{style}]{c}[/]" if style else c)
        console = Console(width=max(120, shutil.get_terminal_size((120, 20)).columns))
        console.print(table)
    else:
        print(title)
        widths = [max(len(r[i]) for r in rows + [("metric", "dockyard", "distribution", "ratio", "")])
                  for i in range(4)]
        header = ("metric", "dockyard", "distribution", "ratio")
        print("  ".join(h.ljust(widths[i]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(header)))
        for r in rows:
            print("  ".join(r[i].ljust(widths[i]) if i == 0 else r[i].rjust(widths[i]) for i in range(4)))
        print(caption)

    print("\ndetails (CPU = cores busy on average over the phase; client = this Python process or the load tool):")
    for k, res in results.items():
        print(f"  {labels[k]}")
        for mk, note in res.notes.items():
            for i, part in enumerate(note.split(" | ")):
                print(f"    {mk if i == 0 else '':<22} {part}")
    print("\nmachine:")
    for k, v in info.items():
        print(f"  {k:<15} {v}")
    noisy = [(labels[k], phase, cores) for k, res in results.items() for phase, cores in res.other.items()
             if cores > OTHER_LOAD_WARN]
    if noisy:
        worst = max(noisy, key=lambda x: x[2])
        print(f"\nWARNING: other processes kept > {OTHER_LOAD_WARN} cores busy in {len(noisy)} phase(s) "
              f"(worst: {worst[2]:.2f} cores, {worst[0]}, {worst[1]}); those numbers are not reliable. "
              "Run again on an idle machine.")


_WRITES = re.compile(r"database: (\d+) write transactions in this process \((\d+) group transactions of (\d+) "
                     r"bodies\)(?:; the writer's turn held ([\d.]+) s)?(?: \(([\d.]+) s of CPU\))?")


def count_write_transactions(res: Results, log_path: Path) -> None:
    """Write transactions per pushed image, from the line each dockyard process logs as it stops
    (every write of the run counts, start-up and background jobs too: a small overcount)."""
    images = res.raw.get("small_push", {}).get("images") if isinstance(res.raw.get("small_push"), dict) else None
    try:
        found = [tuple(float(g or 0) for g in m.groups()) for m in _WRITES.finditer(log_path.read_text(errors="replace"))]
    except OSError:
        return
    if not found or not images:
        return
    turns, groups, bodies, held, cpu = (sum(f[i] for f in found) for i in range(5))
    res.notes["small_push"] += (f", {turns / images:.1f} write transactions per image ({len(found)} processes; "
                                f"{groups:.0f} of them groups of {bodies / groups if groups else 0:.2f} bodies on average)")
    if held:
        res.notes["small_push"] += f", the writer's turn held {held * 1000 / images:.1f} ms per image"
        if cpu:
            res.notes["small_push"] += f" ({cpu * 1000 / images:.1f} ms of it on CPU)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="256 MiB blob, 2 s load runs, 3 s small-image push")
    ap.add_argument("--blob-mib", type=int, help="blob size in MiB (default 1024, 256 with --quick)")
    ap.add_argument("--blob-repeats", type=int,
                    help="push+pull each registry this many times, with different blobs, and report the median "
                         "(default 3, 2 with --quick)")
    ap.add_argument("--seconds", type=float, help="duration of each request-rate run (default 5, 2 with --quick)")
    ap.add_argument("--load-repeats", type=int,
                    help="repeat each request-rate run this many times and report medians (default 3, 1 with --quick)")
    ap.add_argument("--push-seconds", type=float, help="duration of the small-image push (default 10, 3 with --quick)")
    ap.add_argument("--clients", type=int, default=16, help="small-image push clients (default 16)")
    ap.add_argument("--extra-workers", type=int, default=1,
                    help="also run dockyard with --workers N (default 1, one process; 0 = skip)")
    ap.add_argument("--python-load", action="store_true",
                    help="use the Python load generator even if wrk/hey are installed")
    ap.add_argument("--no-prefault", action="store_true",
                    help="do not write+delete a scratch file before the blob pushes (see prefault_page_cache)")
    ap.add_argument("--only", default="blob,load,push",
                    help="comma-separated phases to run: blob (push/pull of the big blob), load (HEAD/GET "
                         "request rates), push (small-image pushes); default all (e.g. --only push)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, data)")
    ap.add_argument("--json", help="also write the raw results to this file")
    args = ap.parse_args(argv)

    if not os.access(DISTRIBUTION_BIN, os.X_OK):
        print(f"{DISTRIBUTION_BIN} not found: apt-get install docker-registry", file=sys.stderr)
        return 2
    settings = Settings(
        blob_bytes=(args.blob_mib or (256 if args.quick else 1024)) * MiB,
        load_seconds=args.seconds or (2.0 if args.quick else 5.0),
        warmup_seconds=1.0,
        push_seconds=args.push_seconds or (3.0 if args.quick else 10.0),
        push_clients=args.clients,
        blob_repeats=args.blob_repeats or (2 if args.quick else 3),
        load_repeats=args.load_repeats or (1 if args.quick else 3),
        prefault=not args.no_prefault,
        python_only=args.python_load,
        only=tuple(p.strip() for p in args.only.split(",") if p.strip()),
    )
    unknown = set(settings.only) - {"blob", "load", "push"}
    if unknown:
        ap.error(f"--only: unknown phase(s) {', '.join(sorted(unknown))}")
    info = machine_info()
    versions = {"wrk": "wrk -t1 (" + tool_version(["wrk", "--version"]).split(" Copyright")[0] + ")",
                "hey": "hey -cpus 1 (Debian hey)",
                "python": "Python asyncio, 1 thread (weak: install wrk and hey from Debian)"}
    info["load generator"] = "; ".join(f"{c.title}: {versions[pick_tool(c, args.python_load)]}"
                                       for c in LOAD_CASES)
    info["distribution"] = tool_version([DISTRIBUTION_BIN, "--version"])
    info["dockyard"] = dockyard_version()
    log("load generator: " + info["load generator"])
    idle = busy_cores(1.0)
    info["busy at start"] = f"{idle:.2f} cores busy during the 1 s before the run"
    if idle > OTHER_LOAD_WARN:
        log(f"WARNING: the machine is busy ({idle:.2f} cores) before the benchmark starts; results will be noisy")

    log(f"preparing {settings.blob_repeats} blob(s) of {settings.blob_bytes // MiB} MiB and their digests (not timed)")
    blobs = [BigBlob.make(settings.blob_bytes) for _ in range(settings.blob_repeats if "blob" in settings.only else 0)]

    workdir = Path(tempfile.mkdtemp(prefix="dockyard-bench-"))
    results: dict[str, Results] = {}
    labels: dict[str, str] = {}
    starters: list[Callable[[], Target]] = [
        lambda: start_distribution(workdir),
        lambda: start_dockyard(workdir, None),
    ]
    if args.extra_workers > 0:
        starters.append(lambda: start_dockyard(workdir, args.extra_workers))
    try:
        for start in starters:
            target = start()
            try:
                labels[target.key] = target.label
                log(f"[{target.label}] listening on {target.server.base_url} (pids {target.server.tree()})")
                results[target.key] = bench_target(target, settings, blobs, workdir)
            except BaseException:
                log(f"[{target.label}] failed; log tail:\n{target.server.log_tail()}")
                raise
            finally:
                target.server.stop()
                shutil.rmtree(target.data_dir, ignore_errors=True)
                if target.key != "distribution" and target.key in results:
                    count_write_transactions(results[target.key], workdir / f"{target.key}.log")
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    ordered = {k: results[k] for k in ("dockyard", f"dockyard-w{args.extra_workers}", "distribution")
               if k in results}
    print()
    render(ordered, labels, metric_list(settings), info)
    if args.json:
        Path(args.json).write_text(json.dumps({k: {"metrics": v.metrics, "notes": v.notes, "raw": v.raw}
                                               for k, v in ordered.items()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
