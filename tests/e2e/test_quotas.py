"""Storage quotas with real pushes against a real ``dockyard serve`` (SQLite and PostgreSQL):
shared layers count once per namespace, a push past the hard limit is DENIED (403) and
changes nothing, the soft threshold raises an event, deletes and collection give the space
back, fsck recounts; concurrent pushes never overshoot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.support import OCI_MANIFEST, image_manifest, make_config, sha256, start_server

KB = 6000


@pytest.fixture(scope="module")
def srv(tmp_path_factory, backend, database_url):
    if backend == "s3":
        pytest.skip("quotas do not depend on the storage driver")
    url = database_url
    if url:  # a database of its own: usage is exact only against its own content
        from tests.support import postgres_database

        ctx = postgres_database()
        url = ctx.__enter__()
    quotas = {"team": {"repositories": "qa/team/*", "hard": 4 * KB - 1, "soft": 0.5}}
    s = start_server(tmp_path_factory.mktemp("quotas") / "data", database_url=url, extra_env={
        "DOCKYARD_QUOTAS": json.dumps(quotas), "DOCKYARD_GC_ENABLED": "false", "DOCKYARD_GC_DELAY": "0",
        "DOCKYARD_SCRUB_ENABLED": "false", "DOCKYARD_DELAYED_DELETE": "false"})
    s.database_url = url
    yield s
    s.stop()
    if database_url:
        ctx.__exit__(None, None, None)


def _push(c: httpx.Client, name: str, data: bytes) -> httpx.Response:
    return c.post(f"/v2/{name}/blobs/uploads/", params={"digest": sha256(data)}, content=data)


def _usage(c, name="team") -> int:
    return c.get(f"/admin/v1/quotas/{name}").json()["usage"]


def _fsck(srv) -> dict:
    out = subprocess.run([sys.executable, "-m", "dockyard", "fsck", "--data-dir", str(srv.data_dir),
                          "--output", "json"], env={**srv.env, "DOCKYARD_DATABASE_URL": srv.database_url},
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    return json.loads(out.stdout)


def _tamper(srv, value: int) -> None:
    url = srv.database_url or f"sqlite:///{srv.data_dir / 'dockyard.db'}"
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE quota_usage SET bytes = :v WHERE name = 'team'"), {"v": value})
    engine.dispose()


def test_hard_soft_shared_delete_collect_and_fsck(srv):
    a, b, c3, d = (os.urandom(KB) for _ in range(4))
    with srv.client() as c:
        assert _push(c, "qa/team/x", a).status_code == 201
        assert _push(c, "qa/team/y", a).status_code == 201  # the same layer in the namespace: counted once
        assert _usage(c) == KB
        assert _push(c, "qa/team/x", b).status_code == 201  # 2 KB of 4: the soft threshold (50%) crossed
        assert _push(c, "qa/team/x", c3).status_code == 201
        assert _usage(c) == 3 * KB
        r = _push(c, "qa/team/y", d)  # would be 4 KB > hard
        assert r.status_code == 403, r.text
        err = r.json()["errors"][0]
        assert err["code"] == "DENIED" and "quota team" in err["message"] and "used" in err["message"]
        assert err["detail"]["usage"] == 3 * KB and err["detail"]["requested"] == KB
        assert c.head(f"/v2/qa/team/y/blobs/{sha256(d)}").status_code == 404  # nothing changed
        assert _push(c, "qa/elsewhere", d).status_code == 201  # outside the namespace: no limit
        r = c.post("/v2/qa/team/y/blobs/uploads/", params={"mount": sha256(d), "from": "qa/elsewhere"})
        assert r.status_code == 403 and "quota team" in r.text  # a mount is refused alike
        assert _usage(c) == 3 * KB
        events = c.get("/admin/v1/events", params={"kind": "quota"}).json()["events"]
        assert len(events) == 1 and events[0]["quota"] == "team" and events[0]["usage"] == 2 * KB
        config = make_config("q")  # small: still fits
        assert _push(c, "qa/team/x", config).status_code == 201
        assert _usage(c) == 3 * KB + len(config)
        # deletes give the space back: a blob still linked elsewhere in the namespace does not
        assert c.delete(f"/v2/qa/team/x/blobs/{sha256(a)}").status_code == 202
        assert _usage(c) == 3 * KB + len(config)
        assert c.delete(f"/v2/qa/team/y/blobs/{sha256(a)}").status_code == 202
        assert _usage(c) == 2 * KB + len(config)
        assert _push(c, "qa/team/y", d).status_code == 201
        manifest = image_manifest(config, [b])
        r = c.put("/v2/qa/team/x/manifests/v1", content=manifest, headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201, r.text
        # collection gives the space back: delete the image (purged at once), collect its links
        assert c.delete(f"/v2/qa/team/x/manifests/{sha256(manifest)}").status_code == 202
        assert c.post("/admin/v1/gc").status_code == 200
        assert _usage(c) == 0  # every link of the namespace was unreferenced and is gone
    # fsck recounts: drift is reported and fixed
    _tamper(srv, 12345)
    report = _fsck(srv)
    assert report["quota_drift"] == [{"quota": "team", "recorded": 12345, "exact": 0}]
    assert _fsck(srv)["quota_drift"] == []


def test_admin_api_quotas(srv):
    with srv.client() as c:
        assert _push(c, "qa/api/one", os.urandom(KB)).status_code == 201
        r = c.put("/admin/v1/quotas/api", json={"repositories": "qa/api/*", "hard": "2KiB"})
        assert r.status_code == 201, r.text
        assert r.json()["usage"] == KB  # counted when declared
        assert c.get("/admin/v1/quotas").json()["api"]["usage"] == KB
        # already over its hard limit: every push into the namespace is refused, manifests too
        assert _push(c, "qa/api/two", os.urandom(10)).status_code == 403
        manifest = image_manifest(b"{}", [])
        r = c.put("/v2/qa/api/one/manifests/v1", content=manifest, headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 403 and "quota api" in r.text
        assert c.put("/admin/v1/quotas/team", json={"repositories": "x/*", "hard": 1}).status_code == 403
        assert c.put("/admin/v1/quotas/bad", json={"repositories": "x/*", "hard": "lots"}).status_code == 400
        assert c.delete("/admin/v1/quotas/api").status_code == 204
        assert c.get("/admin/v1/quotas/api").status_code == 404
        assert _push(c, "qa/api/two", os.urandom(10)).status_code == 201


def test_concurrent_pushes_never_overshoot(srv):
    """Four clients push distinct 6 KB blobs at once into a namespace with room for three
    blobs, and four push one shared blob into four repositories: exactly three blobs get in
    (the shared one counted once), whatever the order, and the usage is exact afterwards."""
    with srv.client() as c:
        r = c.put("/admin/v1/quotas/race", json={"repositories": "qa/race/*", "hard": 3 * KB + KB // 2})
        assert r.status_code == 201
    shared = os.urandom(KB)
    results: dict[str, list[int]] = {"shared": [], "distinct": []}
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def pusher(i: int, data: bytes, kind: str):
        with srv.client() as c:
            barrier.wait()
            status = _push(c, f"qa/race/r{i}", data).status_code
        with lock:
            results[kind].append(status)

    threads = [threading.Thread(target=pusher, args=(i, shared, "shared")) for i in range(4)]
    threads += [threading.Thread(target=pusher, args=(i, os.urandom(KB), "distinct")) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(results["shared"] + results["distinct"]) <= {201, 403}, results
    # the shared layer is in (every push of it then adds nothing) or out (the namespace filled first)
    shared_in = results["shared"].count(201)
    assert shared_in in (0, 4), results
    admitted = results["distinct"].count(201) + (1 if shared_in else 0)
    assert admitted == 3, results  # room for three 6 KB blobs, whichever order they came in
    with srv.client() as c:
        assert _usage(c, "race") == 3 * KB
    assert _fsck(srv)["quota_drift"] == []


def test_oras_push_refused_by_quota(srv, tmp_path, monkeypatch):
    import oras.provider

    class FastRegistry(oras.provider.Registry):
        do_request = oras.provider.Registry.do_request.__wrapped__

    monkeypatch.chdir(tmp_path)
    reg = FastRegistry(hostname=srv.host, insecure=True)
    with srv.client() as c:
        assert c.put("/admin/v1/quotas/oras", json={"repositories": "qa/oras/*", "hard": 4 * KB}).status_code == 201
    Path("small.bin").write_bytes(os.urandom(1000))
    reg.push(target=f"{srv.host}/qa/oras/app:ok", files=["small.bin"])
    Path("big.bin").write_bytes(os.urandom(4 * KB))
    with pytest.raises(Exception):
        reg.push(target=f"{srv.host}/qa/oras/app:big", files=["big.bin"])
    with srv.client() as c:
        assert c.get("/v2/qa/oras/app/manifests/big").status_code == 404
        assert c.get("/v2/qa/oras/app/manifests/ok").status_code == 200
        used = _usage(c, "oras")
    assert 1000 < used < 4 * KB
