"""End-to-end: the mirror behind a bearer-token upstream (a second dockyard), the bound
``mirror_max_size`` with eviction through the reclamation pipeline, and the admin API and CLI,
on PostgreSQL, with ``mirror_prefetch_blobs`` on."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time

import httpx
import pytest

from tests.mirror_support import mirrors_env, push_two_step, write_htpasswd
from tests.support import OCI_MANIFEST, postgres_database, sha256, start_server

ACCEPT = {"Accept": OCI_MANIFEST}
USERS = {"root": "admin", "pat": "pull", "up": "push"}


def _wait(predicate, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def token_upstream(tmp_path_factory):
    """A dockyard that wants bearer tokens (its 401s carry WWW-Authenticate: Bearer realm=...)."""
    data = tmp_path_factory.mktemp("token-upstream")
    htpasswd = write_htpasswd(data / "htpasswd", {u: f"{u}-pw" for u in USERS})
    server = start_server(data, extra_env={"DOCKYARD_AUTH_HTPASSWD": str(htpasswd),
                                           "DOCKYARD_AUTH_ROLES": ",".join(f"{u}={r}" for u, r in USERS.items())})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mirror(tmp_path_factory, token_upstream):
    """On PostgreSQL (test_mirror.py runs on SQLite): the mirror's SQL on both databases."""
    with postgres_database() as url:
        yield from _mirror(tmp_path_factory, token_upstream, url)


def _mirror(tmp_path_factory, token_upstream, database_url: str):
    data = tmp_path_factory.mktemp("bounded-mirror")
    htpasswd = write_htpasswd(data / "htpasswd", {u: f"{u}-pw" for u in USERS})
    mirrors = {"tok": {"prefix": "tok/", "url": token_upstream.url, "username": "up", "password": "up-pw"},
               "wrongpw": {"prefix": "wrongpw/", "url": token_upstream.url, "username": "up", "password": "no"}}
    # pull times are written only by the bound itself (no 10 s flush racing the test): the
    # eviction order is the same on every run
    # and with the prefetch on (test_mirror.py runs without it)
    env = {**mirrors_env(mirrors, mirror_max_size=150_000, gc_delay="0s", pull_flush_interval="1h",
                         mirror_prefetch_blobs="true"),
           "DOCKYARD_SCRUB_ENABLED": "false", "DOCKYARD_GC_ENABLED": "false",
           "DOCKYARD_AUTH_HTPASSWD": str(htpasswd),
           "DOCKYARD_AUTH_ROLES": ",".join(f"{u}={r}" for u, r in USERS.items())}
    server = start_server(data, database_url=database_url, extra_env=env)
    yield server
    server.stop()


def noise(seed: str, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _blob_file(server, digest: str):
    hexdigest = digest.split(":", 1)[1]
    return server.data_dir / "storage" / "blobs" / "sha256" / hexdigest[:2] / hexdigest


def _listing(c: httpx.Client) -> dict:
    r = c.get("/admin/v1/mirrors")
    assert r.status_code == 200, r.text
    return {m["name"]: m for m in r.json()["mirrors"]}


def test_bearer_upstream_and_wrong_credentials(mirror, token_upstream):
    with httpx.Client(base_url=token_upstream.url, auth=("up", "up-pw"), timeout=30) as up:
        digest, manifest, blobs = push_two_step(up, "team/tok", "v1", "bearer", layers=2)
    with mirror.client(auth=("pat", "pat-pw")) as c:
        r = c.get("/v2/tok/team/tok/manifests/v1", headers=ACCEPT)
        assert r.status_code == 200 and r.content == manifest, r.text
        for b in blobs:
            assert c.get(f"/v2/tok/team/tok/blobs/{sha256(b)}").content == b
        assert "/auth/token" in token_upstream.log()  # the bearer challenge flow was followed
        r = c.get("/v2/wrongpw/team/tok/manifests/v1", headers=ACCEPT)
        assert r.status_code == 503 and "refused the credentials" in r.json()["errors"][0]["message"]
    with mirror.client(auth=("root", "root-pw")) as admin:
        _wait(lambda: _listing(admin)["tok"]["images"] == 1, "the image stored")


def test_admin_routes_need_admin(mirror):
    with mirror.client(auth=("pat", "pat-pw")) as c:
        assert c.get("/admin/v1/mirrors").status_code == 403
        assert c.post("/admin/v1/mirrors/prune").status_code == 403
        assert c.post("/admin/v1/mirrors/evict", params={"reference": "tok/team/tok:v1"}).status_code == 403


def test_bound_evicts_least_recently_pulled_and_keeps_a_shared_blob(mirror, token_upstream, tmp_path):
    shared = noise("shared", 30_000)
    with httpx.Client(base_url=token_upstream.url, auth=("up", "up-pw"), timeout=30) as up:
        a = push_two_step(up, "lru/a", "v1", "lru-a", layers=0, shared=[shared, noise("a-only", 60_000)])
        b = push_two_step(up, "lru/b", "v1", "lru-b", layers=0, shared=[noise("b-only", 60_000)])
    with mirror.client(auth=("root", "root-pw")) as c:
        # a local (non-mirrored) image that uses the shared layer
        local = push_two_step(c, "local/app", "v1", "local", layers=0, shared=[shared])
        before = _listing(c)["tok"]["images"]
        for digest, manifest, blobs in (a, b):  # a pulled first, so a is least recently pulled
            name = "lru/a" if digest == a[0] else "lru/b"
            assert c.get(f"/v2/tok/{name}/manifests/v1", headers=ACCEPT).content == manifest
            for blob in blobs:
                assert c.get(f"/v2/tok/{name}/blobs/{sha256(blob)}").content == blob
            _wait(lambda: c.get(f"/v2/tok/{name}/manifests/{digest}", headers=ACCEPT).headers.get(
                "Dockyard-Mirror") is None, f"{name} stored")
        # the bound (150,000 bytes) held both at most briefly: the older one was evicted
        state = _wait(lambda: (lambda s: s if s["bytes"] <= 150_000 else None)(_listing(c)["tok"]), "the bound")
        assert state["images"] == 1 and before == 1  # the bearer test's image and a went, b stayed
        metrics = c.get("/metrics").text
        assert 'dockyard_mirror_evictions_total{reason="bound"}' in metrics
        # the collector reclaims a's own layer; the layer a local image uses stays
        a_only = sha256(a[2][2])
        assert _blob_file(mirror, a_only).exists()
        for _ in range(5):  # link review, blob review, tombstone: a few collections
            r = c.post("/admin/v1/gc")
            assert r.status_code == 200, r.text
            if not _blob_file(mirror, a_only).exists():
                break
        assert not _blob_file(mirror, a_only).exists()
        assert _blob_file(mirror, sha256(shared)).exists()
        assert c.get(f"/v2/local/app/blobs/{sha256(shared)}").content == shared
        assert c.get("/v2/local/app/manifests/v1", headers=ACCEPT).content == local[1]
        # an evicted image is fetched again on its next pull
        r = c.get("/v2/tok/lru/a/manifests/v1", headers=ACCEPT)
        assert r.content == a[1] and r.headers["Dockyard-Mirror"] == "fetched"
        assert c.get(f"/v2/tok/lru/a/blobs/{a_only}").content == a[2][2]
        _wait(lambda: c.get(f"/v2/tok/lru/a/manifests/{a[0]}", headers=ACCEPT).headers.get(
            "Dockyard-Mirror") is None, "a stored again")


def test_evict_and_prune_reports_and_cli(mirror):
    with mirror.client(auth=("root", "root-pw")) as c:
        images = _wait(lambda: _listing(c)["tok"]["images"] or None, "an image")
        dry = c.post("/admin/v1/mirrors/prune", params={"dry_run": "true"}).json()
        assert dry["dry_run"] is True and dry["evicted"] == 0 and dry["total_before"] <= 150_000
        r = c.post("/admin/v1/mirrors/evict", params={"reference": "tok/nope/x:v1"})
        assert r.status_code == 404 and r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
        r = c.post("/admin/v1/mirrors/evict", params={"reference": "local/app:v1"})
        assert r.status_code == 400  # not a mirrored repository: never evicted by the mirror
    env = dict(mirror.env)  # the server's settings (mirrors, bound), its PYTHONPATH

    logs: list[str] = []

    def cli(*args: str) -> dict:
        proc = subprocess.run([sys.executable, "-m", "dockyard", "mirror", *args, "--data-dir", str(mirror.data_dir),
                               "--output", "json"], env=env, capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stderr.decode()
        logs.append(proc.stderr.decode())
        return json.loads(proc.stdout)

    listed = {m["name"]: m for m in cli("list")["mirrors"]}
    assert listed["tok"]["images"] == images
    target = "tok/lru/a:v1"  # stored again last in the test before (b was evicted for it)
    dry = cli("evict", target, "--dry-run")
    assert dry["dry_run"] is True and dry["evicted"] == 1 and dry["bytes"] > 0
    with mirror.client(auth=("root", "root-pw")) as c:
        assert _listing(c)["tok"]["images"] == images
        done = cli("evict", target)
        assert done["evicted"] == 1 and done["bytes"] == dry["bytes"]
        assert _listing(c)["tok"]["images"] == images - 1
    assert f"mirror evict {target.split(':')[0]}@{done['images'][0]['digest']}" in logs[-1]  # a line per image


def test_a_pull_a_moment_ago_keeps_an_image(mirror, token_upstream):
    """The bound sees pulls this process has not flushed yet (pull_flush_interval is an hour
    here): x, mirrored before y but pulled after it, stays; y is the least recently pulled."""
    with httpx.Client(base_url=token_upstream.url, auth=("up", "up-pw"), timeout=30) as up:
        images = {n: push_two_step(up, f"recent/{n}", "v1", f"recent-{n}", layers=0, shared=[noise(n, 60_000)])
                  for n in ("x", "y", "z")}
    with mirror.client(auth=("root", "root-pw")) as c:
        def pull_and_store(n: str) -> None:
            digest, manifest, blobs = images[n]
            assert c.get(f"/v2/tok/recent/{n}/manifests/v1", headers=ACCEPT).content == manifest
            for blob in blobs:
                assert c.get(f"/v2/tok/recent/{n}/blobs/{sha256(blob)}").content == blob
            _wait(lambda: c.get(f"/v2/tok/recent/{n}/manifests/{digest}", headers=ACCEPT).headers.get(
                "Dockyard-Mirror") is None, f"{n} stored")

        pull_and_store("x")
        pull_and_store("y")
        assert _listing(c)["tok"]["bytes"] <= 150_000  # x and y fit
        r = c.get(f"/v2/tok/recent/x/manifests/{images['x'][0]}", headers=ACCEPT)  # x pulled now, after y
        assert r.status_code == 200 and "Dockyard-Mirror" not in r.headers
        pull_and_store("z")  # above the bound: one of x, y goes
        _wait(lambda: _listing(c)["tok"]["bytes"] <= 150_000, "the bound")
        kept = {n for n in ("x", "y", "z")  # a dry-run evict finds what is held (asks no upstream)
                if c.post("/admin/v1/mirrors/evict", params={"reference": f"tok/recent/{n}:v1",
                                                              "dry_run": "true"}).status_code == 200}
        assert kept == {"x", "z"}
