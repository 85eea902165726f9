#!/usr/bin/env python3
"""Pull-through mirror: dockyard's mirror beside distribution in proxy mode (issue 11).

Run:  python bench/mirror_bench.py [--layers 4] [--layer-mib 8] [--runs 5] [--parallel 3]
      [--setting mirror_prefetch_blobs=false ...]

One upstream on loopback (Debian's ``docker-registry``, no auth) holds the images. In front
of it, each on a fresh data directory and a free port on 127.0.0.1:

* dockyard (``python -m dockyard serve``, defaults, log level warning) with
  ``[mirrors.hub] prefix = "hub/"`` pointing at the upstream;
* distribution 2.8 (``docker-registry``) with ``proxy: remoteurl:`` the upstream.

The client pulls an image the way a registry client does, one request after another: GET the
manifest by tag, then GET every blob (config, layers) and checks each blob's sha256.

* cold: an image neither front has seen (a new one per run); beside it the same pull
  straight from the upstream. Target: dockyard cold <= 1.2 x upstream.
* cold, parallel: the same with the blobs fetched ``--parallel`` at a time (3: docker's
  ``max-concurrent-downloads``; skopeo and containerd also pull a few layers at once), on
  another new image, beside the same parallel pull straight from the upstream.
* warm: the same image again once the front holds it (dockyard: once the background store
  has finished; tag within ``mirror_manifest_ttl``). Target: dockyard warm >= 1.0 x distribution
  proxy (ratio = distribution time / dockyard time).

Medians of ``--runs`` runs. One run of the benchmark prints one table.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import HOST, ServerProcess, free_port, machine_info, tool_version  # noqa: E402

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ACCEPT = ", ".join([OCI_MANIFEST, "application/vnd.oci.image.index.v1+json",
                    "application/vnd.docker.distribution.manifest.v2+json",
                    "application/vnd.docker.distribution.manifest.list.v2+json"])


def distribution(workdir: Path, name: str, proxy: str | None = None) -> ServerProcess:
    port = free_port()
    root = workdir / name
    root.mkdir()
    proxy_doc = f"proxy:\n  remoteurl: {proxy}\n" if proxy else ""
    cfg = root / "config.yml"
    cfg.write_text(f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root / 'data'}
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: {HOST}:{port}
  secret: mirror-bench
{proxy_doc}""")
    return ServerProcess(name, ["docker-registry", "serve", str(cfg)], port=port, log_path=root / "log",
                         cwd=workdir).start()


def dockyard(workdir: Path, upstream: str, settings: dict[str, str]) -> ServerProcess:
    port = free_port()
    data = workdir / "dockyard"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")}
    env["DOCKYARD_MIRRORS"] = json.dumps({"hub": {"prefix": "hub/", "url": upstream}})
    env["DOCKYARD_LOG_LEVEL"] = "warning"
    env.update({f"DOCKYARD_{k.upper()}": v for k, v in settings.items()})
    argv = [sys.executable, "-m", "dockyard", "serve", "--data-dir", str(data), "--listen", f"{HOST}:{port}"]
    return ServerProcess("dockyard", argv, port=port, log_path=workdir / "dockyard.log", env=env, cwd=workdir).start()


def push(url: str, repo: str, seed: str, layers: int, size: int) -> None:
    rnd = random.Random(seed)
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    blobs = [config] + [rnd.randbytes(size) for _ in range(layers)]
    with httpx.Client(base_url=url, timeout=120) as c:
        for b in blobs:
            loc = c.post(f"/v2/{repo}/blobs/uploads/").headers["Location"]
            digest = "sha256:" + hashlib.sha256(b).hexdigest()
            r = c.put(f"{loc}{'&' if '?' in loc else '?'}digest={digest}", content=b)
            assert r.status_code == 201, r.text
        desc = lambda mt, b: {"mediaType": mt, "digest": "sha256:" + hashlib.sha256(b).hexdigest(), "size": len(b)}
        manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                               "config": desc("application/vnd.oci.image.config.v1+json", config),
                               "layers": [desc("application/vnd.oci.image.layer.v1.tar", b) for b in blobs[1:]]})
        r = c.put(f"/v2/{repo}/manifests/v1", content=manifest, headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201, r.text


def pull(client: httpx.Client, repo: str, parallel: int = 1) -> tuple[float, dict]:
    """Pull ``repo:v1``: the manifest, then every blob (``parallel`` at a time), each checked."""
    t0 = time.perf_counter()
    r = client.get(f"/v2/{repo}/manifests/v1", headers={"Accept": ACCEPT})
    r.raise_for_status()
    doc = r.json()

    def fetch(d: dict) -> None:
        h = hashlib.sha256()
        with client.stream("GET", f"/v2/{repo}/blobs/{d['digest']}") as body:
            body.raise_for_status()
            for chunk in body.iter_bytes(1 << 20):
                h.update(chunk)
        assert "sha256:" + h.hexdigest() == d["digest"], f"{repo}: {d['digest']} does not match"

    wanted = [doc["config"], *doc["layers"]]
    if parallel <= 1:
        for d in wanted:
            fetch(d)
    else:
        with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
            list(pool.map(fetch, wanted))
    return time.perf_counter() - t0, r.headers


def wait_stored(client: httpx.Client, repo: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.head(f"/v2/{repo}/manifests/v1", headers={"Accept": ACCEPT})
        if r.status_code == 200 and "Dockyard-Mirror" not in r.headers:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{repo} was not stored within {timeout}s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--layer-mib", type=float, default=8)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--parallel", type=int, default=3, help="blobs at a time in the parallel cold row (0: no row)")
    ap.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE",
                    help="a dockyard setting (DOCKYARD_KEY in its environment), e.g. mirror_prefetch_blobs=false")
    args = ap.parse_args()
    settings = dict(s.split("=", 1) for s in args.setting)
    size = int(args.layer_mib * 1024 * 1024)
    with tempfile.TemporaryDirectory(prefix="mirror-bench-") as tmp:
        work = Path(tmp)
        servers = []
        try:
            upstream = distribution(work, "upstream")
            servers.append(upstream)
            proxy = distribution(work, "proxy", proxy=upstream.base_url)
            servers.append(proxy)
            dy = dockyard(work, upstream.base_url, settings)
            servers.append(dy)
            for i in range(args.runs):
                push(upstream.base_url, f"bench/img{i}", f"img{i}", args.layers, size)
                if args.parallel > 1:
                    push(upstream.base_url, f"bench/par{i}", f"par{i}", args.layers, size)
            times: dict[str, list[float]] = {k: [] for k in ("upstream", "dy_cold", "dy_warm", "px_cold", "px_warm",
                                                             "up_par", "dy_par", "px_par")}
            with httpx.Client(base_url=upstream.base_url, timeout=120) as up, \
                    httpx.Client(base_url=dy.base_url, timeout=120) as dc, \
                    httpx.Client(base_url=proxy.base_url, timeout=120) as pc:
                for i in range(args.runs):
                    repo = f"bench/img{i}"
                    times["upstream"].append(pull(up, repo)[0])
                    elapsed, headers = pull(dc, f"hub/{repo}")
                    assert headers.get("Dockyard-Mirror") == "fetched"
                    times["dy_cold"].append(elapsed)
                    times["px_cold"].append(pull(pc, repo)[0])
                    wait_stored(dc, f"hub/{repo}")
                    time.sleep(0.5)  # distribution proxy stores in the background too
                    times["dy_warm"].append(pull(dc, f"hub/{repo}")[0])
                    times["px_warm"].append(pull(pc, repo)[0])
                    if args.parallel > 1:
                        repo = f"bench/par{i}"
                        times["up_par"].append(pull(up, repo, args.parallel)[0])
                        elapsed, headers = pull(dc, f"hub/{repo}", args.parallel)
                        assert headers.get("Dockyard-Mirror") == "fetched"
                        times["dy_par"].append(elapsed)
                        times["px_par"].append(pull(pc, repo, args.parallel)[0])
        finally:
            for s in reversed(servers):
                s.stop()
    med = {k: statistics.median(v) for k, v in times.items() if v}
    mb = (args.layers * size) / 1e6
    print(f"mirror_bench: image = config + {args.layers} x {args.layer_mib:g} MiB layers ({mb:.1f} MB), "
          f"{args.runs} runs, medians; {tool_version(['docker-registry', '--version'])}"
          + (f"; dockyard settings: {', '.join(args.setting)}" if args.setting else ""))
    info = machine_info()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    print()
    print("| pull | dockyard mirror s | distribution proxy s | upstream direct s | ratio | target |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    cold = med["dy_cold"] / med["upstream"]
    warm = med["px_warm"] / med["dy_warm"]
    print(f"| cold (first pull) | {med['dy_cold']:.3f} | {med['px_cold']:.3f} | {med['upstream']:.3f} | "
          f"{cold:.2f}x upstream | <= 1.2x {'met' if cold <= 1.2 else 'NOT met'} |")
    if "dy_par" in med:
        par = med["dy_par"] / med["up_par"]
        print(f"| cold, {args.parallel} blobs at a time | {med['dy_par']:.3f} | {med['px_par']:.3f} | "
              f"{med['up_par']:.3f} | {par:.2f}x upstream | <= 1.2x {'met' if par <= 1.2 else 'NOT met'} |")
    print(f"| warm (held) | {med['dy_warm']:.3f} | {med['px_warm']:.3f} | - | "
          f"{warm:.2f}x distribution | >= 1.0x {'met' if warm >= 1.0 else 'NOT met'} |")
    print()
    print("runs (s): " + "; ".join(f"{k} " + " ".join(f"{t:.3f}" for t in v) for k, v in times.items() if v))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
