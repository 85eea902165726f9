"""The HTTP layer's CPU per request, in one process, without sockets or a server.

``RequestLog(create_app(registry))`` (what ``dockyard serve`` runs, SQLite and the filesystem
under a temporary directory, the request log on ``setup()``'s handler writing to /dev/null)
is called as uvicorn calls it, ``--concurrency`` requests in flight on one uvloop: HEAD blob,
GET manifest by tag, and a small-image push (per image: four blobs, each POST + PUT with its
4 KiB body, then the manifest PUT by tag: 9 requests). Prints the process's CPU (all of its
threads: the event loop and the service threads with the database work) per request.

Without uvicorn's parsing and the network this isolates what dockyard's own HTTP layer costs
(routing, error wrappers, the request log, the thread hop) next to the database work; the
server figures are ``registry_throughput.py``'s. Compare two trees by running this file with
``PYTHONPATH`` pointing at each tree's ``src``, back to back, under the benchmark lock:

    flock /tmp/bench.lock env PYTHONPATH=$PWD/src python bench/http_layer.py
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=4000, help="HEAD and GET requests per row (default 4000)")
    ap.add_argument("--images", type=int, default=300, help="images pushed (default 300)")
    ap.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each row; the median is printed (default 3)")
    args = ap.parse_args(argv)

    import uvloop

    import dockyard
    from dockyard import logsetup
    from dockyard.api.app import create_app
    from dockyard.api.requestlog import RequestLog
    from dockyard.config import load
    from dockyard.server import build_registry

    tmp = Path(tempfile.mkdtemp(prefix="dockyard-http-layer-"))
    real_stderr = sys.stderr
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the request log's stream for the whole run
    logsetup.setup("info", "text")
    registry = build_registry(load(env={}, data_dir=str(tmp)))
    app = RequestLog(create_app(registry, background=False), registry.metrics)

    async def call(method: str, path: str, query: bytes = b"", body: bytes = b"", headers=()) -> tuple[int, dict]:
        length = [(b"content-length", str(len(body)).encode())] if method in ("PUT", "POST", "PATCH") else []
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query, "root_path": "",
                 "headers": [(b"host", b"127.0.0.1:5000"), *headers, *length],
                 "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 5000), "state": {}}
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        sent: list[dict] = []

        async def receive():
            if messages:
                return messages.pop()
            await asyncio.sleep(3600)  # (a disconnect, never reached)

        async def send(message):
            sent.append(message)

        await app(scope, receive, send)
        return sent[0]["status"], dict(sent[0]["headers"])

    async def push_image(repo: str, tag: str) -> str:
        blobs = [os.urandom(4096) for _ in range(3)] + [json.dumps({"os": "linux", "tag": tag}).encode()]
        for data in blobs:
            status, headers = await call("POST", f"/v2/{repo}/blobs/uploads/")
            assert status == 202, status
            status, _ = await call("PUT", headers[b"location"].decode(), query=f"digest={sha(data)}".encode(),
                                   body=data)
            assert status == 201, status
        manifest = {"schemaVersion": 2, "mediaType": MANIFEST,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(blobs[3]),
                               "size": len(blobs[3])},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(b),
                                "size": len(b)} for b in blobs[:3]]}
        status, _ = await call("PUT", f"/v2/{repo}/manifests/{tag}", body=json.dumps(manifest).encode(),
                               headers=[(b"content-type", MANIFEST.encode())])
        assert status == 201, status
        return sha(blobs[0])

    async def measure(row: str, layer: str, count: int, counter: list[int]) -> float:
        async def worker(k: int, n: int) -> None:
            for _ in range(n):
                if row == "head_blob":
                    status, _ = await call("HEAD", f"/v2/bench/a/blobs/{layer}")
                elif row == "get_manifest":
                    status, _ = await call("GET", "/v2/bench/a/manifests/v0", headers=[(b"accept", MANIFEST.encode())])
                else:
                    counter[0] += 1
                    await push_image(f"bench/p{k}", f"v{counter[0]}")
                    status = 200
                assert status == 200, (row, status)

        per = count // args.concurrency
        cpu = time.process_time()
        await asyncio.gather(*(worker(k, per) for k in range(args.concurrency)))
        requests = per * args.concurrency * (9 if row == "small_push" else 1)
        return (time.process_time() - cpu) / requests * 1e6

    async def run() -> dict[str, list[float]]:
        layer = await push_image("bench/a", "v0")
        counter = [0]
        await measure("small_push", layer, args.concurrency * 5, counter)  # warm-up
        await measure("head_blob", layer, args.requests // 4, counter)
        results: dict[str, list[float]] = {"head_blob": [], "get_manifest": [], "small_push": []}
        for _ in range(args.repeats):
            results["head_blob"].append(await measure("head_blob", layer, args.requests, counter))
            results["get_manifest"].append(await measure("get_manifest", layer, args.requests, counter))
            results["small_push"].append(await measure("small_push", layer, args.images, counter))
        return results

    results = uvloop.run(run())
    sys.stderr = real_stderr
    print(f"dockyard from {Path(dockyard.__file__).parent}, {args.concurrency} in flight, load {os.getloadavg()}")
    for row, values in results.items():
        values.sort()
        print(f"  {row:13s} {values[len(values) // 2]:7.0f} µs CPU per request (median of {len(values)}; runs "
              + ", ".join(f"{v:.0f}" for v in values) + ")")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
