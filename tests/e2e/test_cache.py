"""The per-replica blob cache (issue 11) on real servers in front of S3 (moto in server mode):
hits and misses, the admin API (admin only) and the CLI, prefetch, fan-out to every replica,
a pull storm larger than the cache, and replicas killed (SIGKILL) while they fill and prefetch."""

from __future__ import annotations

import json
import os
import re
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import bcrypt
import httpx
import pytest

from tests.support import OCI_MANIFEST, image_manifest, make_config, push_blob, sha256, start_server

USERS = {"alice": "admin", "carol": "pull"}
ADMIN = ("alice", "alice-pw")


def _env(moto, **extra) -> dict:
    bucket = f"cache-{uuid.uuid4().hex[:10]}"
    moto.make_bucket(bucket)
    env = moto.env(bucket, prefix="r")
    env.update({"DOCKYARD_GC_ENABLED": "false", "DOCKYARD_SCRUB_ENABLED": "false"})
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _auth_env(data: Path) -> dict:
    data.mkdir(parents=True, exist_ok=True)
    htpasswd = data / "htpasswd"
    htpasswd.write_text("".join(
        f"{u}:{bcrypt.hashpw(f'{u}-pw'.encode(), bcrypt.gensalt(rounds=4)).decode()}\n" for u in USERS))
    return {"DOCKYARD_AUTH_HTPASSWD": str(htpasswd),
            "DOCKYARD_AUTH_ROLES": ",".join(f"{u}={r}" for u, r in USERS.items())}


def _metric(client, name: str, **labels) -> float:
    text = client.get("/metrics").text
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


def _push_image(client, name: str, tag: str, layers: list[bytes]) -> None:
    config = make_config(tag)
    for blob in [config, *layers]:
        push_blob(client, name, blob)
    r = client.put(f"/v2/{name}/manifests/{tag}", content=image_manifest(config, layers),
                   headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text


def _verify_cache(cache_dir: Path) -> int:
    """Every entry the index shows as ready hashes to its digest and has its size; returns their count."""
    from dockyard.meta.cacheindex import CacheIndex

    index = CacheIndex(cache_dir / "index.db")
    ready = [e for e in index.page(limit=100_000) if e.state == "ready"]
    for e in ready:
        data = (cache_dir / "blobs" / "sha256" / e.digest.split(":")[1]).read_bytes()
        assert len(data) == e.size and sha256(data) == e.digest, e.digest
    return len(ready)


def _cli(data: Path, env: dict, *args: str) -> dict:
    r = subprocess.run([sys.executable, "-m", "dockyard", "cache", *args, "--data-dir", str(data), "--output", "json"],
                       env={**{k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")}, **env},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def cached(moto, tmp_path_factory):
    data = tmp_path_factory.mktemp("cached")
    env = {**_env(moto, DOCKYARD_CACHE_MAX_SIZE="4MiB", DOCKYARD_CACHE_PREFETCH_INTERVAL="1s"), **_auth_env(data)}
    proc = start_server(data, extra_env=env)
    yield proc
    proc.stop()


def test_hits_ranges_admin_api_and_cli(cached):
    admin = cached.client(auth=ADMIN)
    carol = cached.client(auth=("carol", "carol-pw"))
    name = "team/cached"
    layers = [os.urandom(300_000), os.urandom(200_000)]
    _push_image(admin, name, "v1", layers)
    digest = sha256(layers[0])
    for _ in range(3):
        r = carol.get(f"/v2/{name}/blobs/{digest}")
        assert r.status_code == 200 and r.content == layers[0]
    r = carol.get(f"/v2/{name}/blobs/{digest}", headers={"Range": "bytes=1000-1999"})
    assert r.status_code == 206 and r.content == layers[0][1000:2000]
    assert _metric(admin, "dockyard_cache_misses_total") == 1 and _metric(admin, "dockyard_cache_hits_total") == 3
    assert _metric(admin, "dockyard_cache_served_bytes_total", source="cache") == 2 * 300_000 + 1000
    # the dashboard's cache page: this replica's hits, misses and hit ratio (issue 14)
    login = httpx.post(cached.url + "/dashboard/login", data={"user": ADMIN[0], "password": ADMIN[1],
                                                              "next": "/dashboard/cache"})
    page = httpx.get(cached.url + "/dashboard/cache", cookies={"dockyard_session": login.cookies["dockyard_session"]})
    row = page.text.split('id="cache-replicas"', 1)[1].split("</tr>", 2)[1]
    assert "(this replica)" in row and re.findall(r'class="num">(\d+)</td>', row)[:3] == ["1", "3", "1"], row
    assert "75.0%" in row

    for method, path in (("GET", "/admin/v1/cache"), ("PUT", f"/admin/v1/cache/{name}:v1"),
                         ("DELETE", f"/admin/v1/cache/{digest}"), ("DELETE", "/admin/v1/cache"),
                         ("POST", "/admin/v1/cache/clean"), ("POST", "/admin/v1/cache/prune")):
        assert carol.request(method, path).status_code == 403, (method, path)
    listing = admin.get("/admin/v1/cache").json()
    mine = next(iter(listing["replicas"].values()))
    entry = next(e for e in mine["entries"] if e["digest"] == digest)
    assert entry["size"] == 300_000 and entry["hits"] == 3 and entry["pinned"] is False
    assert listing["total_bytes"] == 300_000 and listing["total_entries"] == 1

    # prefetch the image by tag, pinned; the background job caches its config and layers
    assert admin.put(f"/admin/v1/cache/{name}:v1", params={"pin": "true"}).status_code == 202
    assert admin.put("/admin/v1/cache/not a reference").status_code == 400
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and admin.get("/admin/v1/cache").json()["queue_length"]:
        time.sleep(0.2)
    entries = {e["digest"]: e for e in
               next(iter(admin.get("/admin/v1/cache").json()["replicas"].values()))["entries"]}
    assert {sha256(layers[1]), digest} <= set(entries) and all(e["pinned"] for e in entries.values())

    # destructive calls: dry runs change nothing; reports carry Glance's names
    r = admin.post("/admin/v1/cache/clean", params={"dry_run": "true"}).json()
    assert r["total_files_cleaned"] == 0 and "total_bytes_cleaned" in r
    assert admin.post("/admin/v1/cache/prune").json()["total_files_pruned"] == 0  # under the low watermark
    r = admin.delete(f"/admin/v1/cache/{digest}", params={"dry_run": "true"}).json()
    assert r["total_bytes_deleted"] == 300_000 and admin.get("/admin/v1/cache").json()["total_entries"] == 3
    assert admin.delete(f"/admin/v1/cache/{digest}").json()["total_files_deleted"] == 1
    assert admin.delete("/admin/v1/cache/sha256:nothex").status_code == 400

    # the CLI sees the same index (here beside the running server)
    listing = _cli(cached.data_dir, cached.env, "list")
    assert listing["total_entries"] == 2 and digest not in {e["digest"] for e in listing["entries"]}
    assert _cli(cached.data_dir, cached.env, "clear", "--dry-run")["total_files_deleted"] == 2
    cleared = admin.delete("/admin/v1/cache").json()
    assert cleared["total_files_deleted"] == 2 and admin.get("/admin/v1/cache").json()["total_entries"] == 0
    r = carol.get(f"/v2/{name}/blobs/{digest}")
    assert r.content == layers[0] and _metric(admin, "dockyard_cache_misses_total") == 2
    assert _verify_cache(cached.data_dir / "cache") == 1


def test_hits_of_one_and_of_several_chunks_and_ranges_across_chunks(moto, tmp_path):
    """A hit of one chunk (1 MiB: read whole in the route's one thread call, sent as a plain
    response) and of several (streamed), whole and by ranges across chunk boundaries: byte-exact,
    and every read lease is given back afterwards (the entries can be evicted again)."""
    from dockyard.meta.cacheindex import CacheIndex

    server = start_server(tmp_path / "chunks", extra_env=_env(moto, DOCKYARD_CACHE_MAX_SIZE="16MiB",
                                                               DOCKYARD_WORKERS=2))
    try:
        client = server.client()
        one, several = os.urandom(1024 * 1024), os.urandom(2 * 1024 * 1024 + 12_345)
        digests = {push_blob(client, "chunks/app", b): b for b in (one, several)}
        for _ in range(2):  # a miss that fills, then hits
            for digest, data in digests.items():
                r = client.get(f"/v2/chunks/app/blobs/{digest}")
                assert r.status_code == 200 and r.content == data and r.headers["content-length"] == str(len(data))
        big = sha256(several)
        for first, last in ((1024 * 1024 - 10, 1024 * 1024 + 9), (0, 2 * 1024 * 1024 + 1),
                            (2 * 1024 * 1024, len(several) - 1), (5, 5)):
            r = client.get(f"/v2/chunks/app/blobs/{big}", headers={"Range": f"bytes={first}-{last}"})
            assert r.status_code == 206 and r.content == several[first:last + 1], (first, last)
            assert r.headers["content-range"] == f"bytes {first}-{last}/{len(several)}"
        r = client.get(f"/v2/chunks/app/blobs/{sha256(one)}", headers={"Range": "bytes=-100"})
        assert r.status_code == 206 and r.content == one[-100:]
        index = CacheIndex(tmp_path / "chunks" / "cache" / "index.db")
        assert {e.digest for e in index.page() if e.state == "ready"} == set(digests)
        deadline = time.monotonic() + 10
        while index.reader_pids() and time.monotonic() < deadline:  # the last chunk may reach the
            time.sleep(0.05)  # client a moment before the server closes the stream
        assert index.reader_pids() == []
    finally:
        server.stop()


def test_pull_storm_larger_than_the_cache_stays_under_its_maximum(moto, tmp_path):
    max_size = 2 * 1024 * 1024
    server = start_server(tmp_path / "storm", extra_env=_env(moto, DOCKYARD_CACHE_MAX_SIZE=max_size))
    cache_dir = tmp_path / "storm" / "cache"
    try:
        client = server.client()
        blobs = [os.urandom(random.randint(100_000, 400_000)) for _ in range(24)]  # ~6 MiB, 3x the cache
        for b in blobs:
            push_blob(client, "storm/app", b)
        samples, stop = [], threading.Event()

        def files():
            out = set()
            for root, _, names in os.walk(cache_dir):
                for n in names:
                    if n.startswith("index.db"):
                        continue
                    try:
                        out.add((n, os.stat(os.path.join(root, n)).st_size))
                    except FileNotFoundError:
                        pass
            return frozenset(out)

        def sample():
            while not stop.is_set():
                first = files()
                if files() == first:  # two walks that agree: a consistent view
                    samples.append(sum(s for _, s in first))
                time.sleep(0.002)

        errors = []

        def pull(seed):
            rnd = random.Random(seed)
            with server.client() as c:
                for _ in range(20):
                    b = blobs[rnd.randrange(len(blobs))]
                    r = c.get(f"/v2/storm/app/blobs/{sha256(b)}")
                    if r.status_code != 200 or r.content != b:
                        errors.append(r.status_code)

        sampler = threading.Thread(target=sample)
        sampler.start()
        pullers = [threading.Thread(target=pull, args=(i,)) for i in range(4)]
        [t.start() for t in pullers]
        [t.join() for t in pullers]
        stop.set()
        sampler.join()
        assert not errors
        assert len(samples) > 20 and max(samples) <= max_size, (len(samples), max(samples))
        assert max(samples) > max_size // 2  # the cache was really used
        assert _metric(client, "dockyard_cache_evictions_total", reason="fill") > 0
        assert _verify_cache(cache_dir) > 0
    finally:
        server.stop()


@pytest.mark.slow
def test_replica_killed_while_filling_and_prefetching(moto, tmp_path):
    data, faults = tmp_path / "killed", tmp_path / "faults"
    faults.mkdir()
    env = _env(moto, DOCKYARD_CACHE_MAX_SIZE="64MiB", DOCKYARD_CACHE_PREFETCH_INTERVAL="1s",
               DOCKYARD_CACHE_PREFETCH_WORKERS=1, DOCKYARD_STORAGE_LATENCY="50ms",
               DOCKYARD_FAULTS_DIR=str(faults))
    server = start_server(data, extra_env=env)
    cache_dir = data / "cache"
    client = server.client()
    held = os.urandom(500_000)
    push_blob(client, "kill/app", held)
    layers = [os.urandom(200_000) for _ in range(10)]
    _push_image(client, "kill/app", "big", layers)

    # 1. killed between the rename of a verified file and its entry turning ready (a fault point)
    (faults / "cache.before_ready.hold").touch()
    def pull_held():
        try:
            httpx.get(f"{server.url}/v2/kill/app/blobs/{sha256(held)}", timeout=30)
        except httpx.HTTPError:
            pass  # the server is killed under it

    threading.Thread(target=pull_held, daemon=True).start()
    deadline = time.monotonic() + 20
    while not (faults / "cache.before_ready.reached").exists():
        assert time.monotonic() < deadline, "the fill never reached its fault point"
        time.sleep(0.02)
    server.stop(signal.SIGKILL)
    assert (cache_dir / "blobs" / "sha256" / sha256(held).split(":")[1]).exists()  # a file, not an entry
    assert _verify_cache(cache_dir) == 0

    # 2. killed while it prefetches (10 layers, one at a time, 50 ms per storage call)
    (faults / "cache.before_ready.held").unlink(missing_ok=True)
    server = start_server(data, extra_env=env)
    assert client.put(f"{server.url}/admin/v1/cache/kill/app:big").status_code == 202
    deadline = time.monotonic() + 30
    while _metric(httpx.Client(base_url=server.url), "dockyard_cache_entries") < 3:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # and while it fills for clients: random kills, a pull storm on the side
    stop = threading.Event()

    def pull():
        while not stop.is_set():
            try:
                httpx.get(f"{server.url}/v2/kill/app/blobs/{sha256(random.choice(layers))}", timeout=5)
            except httpx.HTTPError:
                pass

    pullers = [threading.Thread(target=pull, daemon=True) for _ in range(3)]
    [t.start() for t in pullers]
    time.sleep(random.uniform(0.05, 0.3))
    server.stop(signal.SIGKILL)
    stop.set()
    [t.join(10) for t in pullers]
    _verify_cache(cache_dir)
    from dockyard.meta.cacheindex import CacheIndex
    from dockyard.meta.prefetchqueue import PrefetchQueue

    index = CacheIndex(cache_dir / "index.db")
    queued = [q.target for q in PrefetchQueue(index).listing()]
    if queued:
        assert queued == ["kill/app:big"]  # the queue survived the kill
    else:  # on a slow machine the pullers cached the rest first and the prefetch finished before the kill
        ready = {e.digest for e in index.page(limit=100) if e.state == "ready"}
        assert {sha256(b) for b in layers} <= ready, "an empty queue means the prefetch had finished"

    # 3. restarted: the queue resumes and finishes; nothing visible fails verification
    server = start_server(data, extra_env=env)
    try:
        c = server.client()
        deadline = time.monotonic() + 60
        while c.get("/admin/v1/cache").json()["queue_length"]:
            assert time.monotonic() < deadline, c.get("/admin/v1/cache").json()
            time.sleep(0.2)
        digests = {e["digest"] for e in c.get("/admin/v1/cache", params={"scope": "local"}).json()["entries"]}
        assert {sha256(layer) for layer in layers} <= digests
        assert c.post("/admin/v1/cache/clean").json()["total_files_cleaned"] >= 0
        assert _verify_cache(cache_dir) >= 11
        assert c.get(f"/v2/kill/app/blobs/{sha256(held)}").content == held
    finally:
        server.stop()


def test_one_call_reaches_every_replica(moto, tmp_path):
    env = _env(moto, DOCKYARD_CACHE_MAX_SIZE="16MiB", DOCKYARD_CACHE_PREFETCH_INTERVAL="1s",
               DOCKYARD_DATABASE_URL=f"sqlite:///{tmp_path / 'shared.db'}")
    a = start_server(tmp_path / "a", database_url=env.pop("DOCKYARD_DATABASE_URL"), extra_env=env)
    b = start_server(tmp_path / "b", database_url=f"sqlite:///{tmp_path / 'shared.db'}", extra_env=env)
    try:
        ca, cb = a.client(), b.client()
        one, two = os.urandom(100_000), os.urandom(150_000)
        push_blob(ca, "fan/app", one)
        push_blob(ca, "fan/app", two)
        assert ca.get(f"/v2/fan/app/blobs/{sha256(one)}").content == one
        assert cb.get(f"/v2/fan/app/blobs/{sha256(two)}").content == two
        deadline = time.monotonic() + 30
        while min(len(c.get("/admin/v1/cache").json()["replicas"]) for c in (ca, cb)) < 2:  # both registered
            assert time.monotonic() < deadline, "replicas did not register"
            time.sleep(0.2)
        listing = cb.get("/admin/v1/cache").json()
        assert set(listing["replicas"]) == {a.url, b.url} and not listing["failed_replicas"]
        assert listing["total_bytes"] == 250_000 and listing["total_entries"] == 2
        assert listing["replicas"][a.url]["entries"][0]["digest"] == sha256(one)
        r = ca.put(f"/admin/v1/cache/{sha256(one)}").json()  # queued on both; b fetches it
        assert set(r["replicas"]) == {a.url, b.url}
        deadline = time.monotonic() + 30
        while cb.get("/admin/v1/cache", params={"scope": "local"}).json()["total_entries"] < 2 \
                or ca.get("/admin/v1/cache").json()["queue_length"]:  # both replicas worked their queue
            assert time.monotonic() < deadline
            time.sleep(0.2)
        cleared = ca.delete("/admin/v1/cache", params={"dry_run": "true"}).json()
        assert cleared["total_files_deleted"] == 3 and cleared["total_bytes_deleted"] == 350_000
        assert ca.delete("/admin/v1/cache").json()["total_files_deleted"] == 3
        assert cb.get("/admin/v1/cache").json()["total_entries"] == 0
        assert cb.post("/admin/v1/cache/prune").json()["total_files_pruned"] == 0
        b.stop()  # still registered (seen within the last minute), but it does not answer
        r = ca.get("/admin/v1/cache").json()
        assert r["failed_replicas"] == [b.url] and "error" in r["replicas"][b.url]
    finally:
        a.stop()
        b.stop()
