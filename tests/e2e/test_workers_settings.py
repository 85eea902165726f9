"""``dockyard serve --workers 2``: every setting reaches every worker intact.

The settings that once arrived mangled (immutable tag globs split at commas, retention
tables that made every worker fail at start) are set in a TOML file, beside auth and a
storage root outside data_dir. Each check is repeated over fresh connections so that
both workers answer some of them; one worker with a wrong setting fails the test.
"""

import time
from pathlib import Path

import bcrypt
import httpx
import pytest

from dockyard.config import cpu_count

from tests.support import image_manifest, make_config, make_layer, push_blob, push_image, sha256, start_server, \
    OCI_MANIFEST

USERS = {"alice": "admin", "bob": "push", "carol": "pull"}
ROUNDS = 16


def _htpasswd(path):
    path.write_text("".join(
        f"{u}:{bcrypt.hashpw(f'{u}-pw'.encode(), bcrypt.gensalt(rounds=4)).decode()}\n" for u in USERS))


def test_every_setting_reaches_every_worker(backend, database_url, tmp_path):
    data = tmp_path / "data"
    elsewhere = tmp_path / "elsewhere"
    htpasswd = tmp_path / "htpasswd"
    _htpasswd(htpasswd)
    conf = tmp_path / "dockyard.toml"
    conf.write_text(f"""
storage_root = "{elsewhere}"
immutable_tags = ["prod/*:v*"]
auth_htpasswd = "{htpasswd}"
token_secret = "one-secret-for-every-worker"
gc_enabled = false
scrub_enabled = false

[auth_roles]
alice = "admin"
bob = "push"
carol = "pull"

[retention.nightly]
repositories = ["team/*"]
keep_recent = 3
schedule = "24h"
""")
    server = start_server(data, database_url=database_url, args=["--config", str(conf), "--workers", "2"])
    try:
        def as_user(user):
            return httpx.Client(base_url=server.url, auth=(user, f"{user}-pw"), timeout=30)

        with as_user("bob") as bob:
            pinned, _, blobs = push_image(bob, "prod/app", "v1", "pinned")
            # another image, to try to move the immutable tag onto
            config, layer = make_config("mover"), make_layer("mover")
            for b in (config, layer):
                push_blob(bob, "prod/app", b)
            other = image_manifest(config, [layer])
            assert bob.put(f"/v2/prod/app/manifests/{sha256(other)}", content=other,
                           headers={"Content-Type": OCI_MANIFEST}).status_code == 201

        r = httpx.get(server.url + "/auth/token", auth=("alice", "alice-pw"))
        assert r.status_code == 200, r.text
        token = r.json()["token"]

        for _ in range(ROUNDS):  # a fresh connection each time: both workers answer
            assert httpx.get(server.url + "/v2/").status_code == 401  # auth on
            with as_user("bob") as bob:
                r = bob.put("/v2/prod/app/manifests/v1", content=other, headers={"Content-Type": OCI_MANIFEST})
                assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED", r.text
                r = bob.delete("/v2/prod/app/manifests/v1")
                assert r.status_code == 403, r.text
                r = bob.delete(f"/v2/prod/app/manifests/{pinned}")
                assert r.status_code == 403, r.text
            with as_user("carol") as carol:
                assert carol.post("/v2/prod/app/blobs/uploads/").status_code == 403  # roles
                assert carol.get("/v2/prod/app/manifests/v1").headers["Docker-Content-Digest"] == pinned
            with as_user("alice") as alice:
                r = alice.get("/admin/v1/policies")
                assert r.status_code == 200 and r.json()["nightly"]["keep_recent"] == 3, r.text
            r = httpx.get(server.url + "/v2/", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200  # one token secret for every worker

        # storage: every blob lives under storage_root, none under data_dir
        stored = {p.name for p in elsewhere.rglob("*") if p.is_file()}
        for b in blobs:
            assert sha256(b).split(":")[1] in stored
        assert not (data / "storage").exists() or not any(p.is_file() for p in (data / "storage").rglob("*"))
        log = server.log()
        assert "Traceback" not in log and "must be JSON" not in log
    finally:
        server.stop()


def _workers(pid: int) -> list[int]:
    """The worker processes of ``pid`` (not multiprocessing's resource tracker)."""
    found = []
    try:
        children = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []
    for child in children:
        try:
            if b"resource_tracker" not in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
        except FileNotFoundError:
            pass
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_default_serve_runs_one_worker_per_core_and_they_die_with_it(tmp_path):
    """No ``workers`` setting: one HTTP worker per core; pushes and pulls through all of them;
    a SIGKILLed ``dockyard serve`` leaves no worker behind (they would keep its port)."""
    cores = cpu_count()
    server = start_server(tmp_path / "data", extra_env={"DOCKYARD_WORKERS": "0", "DOCKYARD_GC_ENABLED": "false",
                                                        "DOCKYARD_SCRUB_ENABLED": "false"})
    try:
        assert f"{cores} worker" in server.log()
        deadline = time.monotonic() + 30
        while cores > 1 and len(_workers(server.proc.pid)) < cores and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = _workers(server.proc.pid) if cores > 1 else []
        assert len(workers) == (cores if cores > 1 else 0), (workers, server.log())
        pushed = []
        for i in range(ROUNDS):  # a fresh connection each time: every worker answers some
            with server.client() as c:
                pushed.append(push_image(c, f"cores/app{i % 3}", f"t{i}", f"cores-{i}"))
        for i, (digest, _, blobs) in enumerate(pushed):
            with server.client() as c:
                assert c.get(f"/v2/cores/app{i % 3}/manifests/t{i}").headers["Docker-Content-Digest"] == digest
                for b in blobs:
                    assert c.get(f"/v2/cores/app{i % 3}/blobs/{sha256(b)}").content == b
        server.proc.kill()
        server.proc.wait(10)
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in workers), "workers outlived their killed parent"
        with pytest.raises(httpx.HTTPError):
            httpx.get(server.url + "/v2/", timeout=2)
        assert "Traceback" not in server.log()
    finally:
        server.stop()
