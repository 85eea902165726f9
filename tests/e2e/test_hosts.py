"""Host-aware images (issue 12): a real registry and three real ``dockyard agent`` processes on
loopback, each with its own images_dir and the ``directory`` runtime; agents are SIGKILLed in
the middle of a pull and of a delete (fault points hold them there)."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid

import httpx
import pytest

from tests.e2e.hosts_support import (AgentProcess, add_host, cli, cli_json, create_container, files_under,
                                     host_images, image_row, queue, wait_for)
from tests.support import push_image, sha256, start_server

AGENT_ARGS = ["--runtime", "directory", "--poll-interval", "0.2s", "--inventory-interval", "0.5s",
              "--cleanup-interval", "1s", "--unmanaged-min-age", "3s", "--log-level", "info"]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    root = tmp_path_factory.mktemp("hosts")
    server = start_server(root / "data", extra_env={"DOCKYARD_HOST_DOWN_AFTER": "2s"})
    agents = {}
    try:
        for name in ("h1", "h2", "h3"):
            token = httpx.post(f"{server.url}/admin/v1/hosts/{name}", timeout=10).json()["token"]
            agents[name] = AgentProcess(server, name, token, root / name / "images", AGENT_ARGS, {}).start()
        yield server, agents
    finally:
        for a in agents.values():
            a.stop()
        server.stop()
        for a in agents.values():
            assert "Traceback" not in a.log(), a.log()
        assert "Traceback" not in server.log(), server.log()


def _push(server, repo: str, tag: str = "v1") -> str:
    with server.client() as c:
        digest, _, _ = push_image(c, repo, tag, f"{repo}-{tag}-{uuid.uuid4().hex[:6]}")
    return digest


def _repo() -> str:
    return f"team/h{uuid.uuid4().hex[:8]}"


def _managed_pull(server, host: str, repo: str, tag: str = "v1") -> dict:
    assert queue(server, host, "pull", f"{repo}:{tag}")["state"] == "pending"
    return wait_for(lambda: next((i for i in host_images(server, host)["images"] if i["repository"] == repo), None),
                    what=f"{repo} on {host}")


def test_host_credential_only_for_its_own_host(fleet):
    server, agents = fleet
    token = add_host(server, "lonely")
    auth = {"Authorization": f"Bearer {token}"}
    repo = _repo()
    digest = _push(server, repo)
    with httpx.Client(base_url=server.url, headers=auth, timeout=10) as c:
        assert c.get(f"/v2/{repo}/manifests/{digest}").status_code == 200  # pulls
        assert c.post("/admin/v1/hosts/lonely/heartbeat", json={"version": "x"}).status_code == 204
        assert c.get("/admin/v1/hosts/h1/work").status_code == 403  # another host's calls
        assert c.put("/admin/v1/hosts/h1/inventory", content=b"").status_code == 403
        assert c.get("/admin/v1/hosts").status_code == 403  # admin calls
        assert c.post("/admin/v1/hosts/lonely/work", params={"kind": "pull", "reference": f"{repo}:v1"}).status_code == 403
        assert c.put(f"/v2/{repo}/manifests/v2", content=b"{}").status_code == 403  # no push
        assert c.put("/admin/v1/hosts/lonely/inventory", content=b'{"repository": "../x"}\n').status_code == 400
    assert "lonely" in [h["name"] for h in cli_json(server, "host", "list")["hosts"]]
    cli(server, "host", "remove", "lonely")
    with httpx.Client(base_url=server.url, headers=auth, timeout=10) as c:
        assert c.get(f"/v2/{repo}/manifests/{digest}").status_code == 401  # revoked
        assert c.get("/admin/v1/hosts/lonely/work").status_code == 401
    r = httpx.get(f"{server.url}/v2/", headers={"Authorization": "Bearer dyh_unknown"})
    assert r.status_code == 401
    states = {h["name"]: h["state"] for h in httpx.get(f"{server.url}/admin/v1/hosts").json()["hosts"]}
    assert states["lonely"] == "revoked" and states["h1"] == "up"


def test_managed_pull_and_a_delete_that_reaches_only_its_host(fleet):
    server, agents = fleet
    repo = _repo()
    digest = _push(server, repo)
    row1 = _managed_pull(server, "h1", repo)
    row2 = _managed_pull(server, "h2", repo)
    assert row1["managed"] and row2["managed"] and row1["digest"] == digest and row1["bytes"] > 0
    h1 = agents["h1"].images_dir
    key = digest.replace(":", "-")
    assert (h1 / "tars" / f"{key}.tar").exists() and (h1 / "runtime" / key / "index.json").exists()
    assert image_row(server, "h3", digest) is None
    dry = cli_json(server, "image", "delete", "--host", "h1", "--dry-run", f"{repo}:v1")
    assert dry["bytes"] == row1["bytes"] and image_row(server, "h1", digest) is not None
    cli(server, "image", "delete", "--host", "h1", f"{repo}:v1")
    wait_for(lambda: image_row(server, "h1", digest) is None, what="h1 row to go")
    assert [f for f in files_under(h1) if key in f] == []  # tar, record, layout: all gone
    assert files_under(h1 / "tmp") == []
    assert image_row(server, "h2", digest) is not None  # the other host keeps its copy
    assert (agents["h2"].images_dir / "tars" / f"{key}.tar").exists()
    with server.client() as c:  # and the registry its own
        assert c.get(f"/v2/{repo}/manifests/v1").status_code == 200


def test_unmanaged_images_inventory_and_periodic_cleanup(fleet):
    server, agents = fleet
    h3 = agents["h3"]
    used, old = _repo(), _repo()
    used_digest, old_digest = _push(server, used), _push(server, old)
    create_container(h3, "c-used", used, "v1")
    create_container(h3, "c-old", old, "v1")
    # the agent may report the image in the inventory pass that runs between its pull and the
    # container's record: the next pass adds the container
    row = wait_for(lambda: (r := image_row(server, "h3", old_digest)) and r["containers"] and r,
                   what="unmanaged image with its container in the inventory")
    assert not row["managed"] and row["containers"] == ["c-old"]
    h3.stop()  # still while the residue is laid out and the dry run looks at it
    (h3.images_dir / "containers" / "c-old.json").unlink()  # the container goes; its image is unused now
    junk = h3.images_dir / "tars" / "sha256-0000.tar"
    junk.write_bytes(b"x" * 1000)
    os.utime(junk, (time.time() - 3600, time.time() - 3600))
    stale = h3.images_dir / "tmp" / "stale-from-a-crash"
    stale.write_bytes(b"y" * 10)
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    dry = h3.run("cleanup", "--dry-run", "--unmanaged-min-age", "0s", "--output", "json")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert [i["digest"] for i in report["images"]] == [old_digest]  # never the one a container uses
    assert {f["path"] for f in report["files"]} == {str(junk), str(stale)}
    assert report["bytes"] == report["images"][0]["bytes"] + 1010 and junk.exists() and stale.exists()
    h3.start()
    key = old_digest.replace(":", "-")
    wait_for(lambda: image_row(server, "h3", old_digest) is None, timeout=60, what="cleanup of the old image")
    assert not (h3.images_dir / "tars" / f"{key}.tar").exists() and not (h3.images_dir / "runtime" / key).exists()
    assert not junk.exists() and not stale.exists()
    kept = image_row(server, "h3", used_digest)
    assert kept is not None and kept["containers"] == ["c-used"]
    assert "cleanup: removed unmanaged image" in h3.log()


def test_host_down_delete_pending_then_completed(fleet):
    server, agents = fleet
    repo = _repo()
    digest = _push(server, repo)
    _managed_pull(server, "h2", repo)
    agents["h2"].stop(signal.SIGKILL)
    queue(server, "h2", "delete", f"{repo}:v1")
    time.sleep(0.6)
    row = image_row(server, "h2", digest)
    assert row is not None and row["delete"]["state"] == "pending"
    assert "pending" in cli(server, "host", "images", "h2").stdout
    wait_for(lambda: {h["name"]: h["state"] for h in httpx.get(f"{server.url}/admin/v1/hosts").json()["hosts"]}["h2"]
             == "down", what="h2 shown down")
    agents["h2"].start()
    wait_for(lambda: image_row(server, "h2", digest) is None, what="the delete to complete after restart")
    assert not (agents["h2"].images_dir / "tars" / f"{digest.replace(':', '-')}.tar").exists()


def test_delete_the_runtime_refuses_stays_with_its_error(fleet):
    server, agents = fleet
    repo = _repo()
    digest = _push(server, repo)
    create_container(agents["h1"], "busy", repo, "v1")
    wait_for(lambda: image_row(server, "h1", digest), what="the in-use image in the inventory")
    queue(server, "h1", "delete", f"{repo}@{digest}")
    row = wait_for(lambda: (r := image_row(server, "h1", digest)) and r["delete"]["state"] == "failed" and r,
                   what="the delete to fail")
    assert "in use by container(s) busy" in row["delete"]["error"]
    time.sleep(1.0)  # later inventories keep the row and the failure
    assert image_row(server, "h1", digest)["delete"]["state"] == "failed"


def test_registry_delete_reports_host_copies_and_prune_keeps_images_used_on_hosts(fleet):
    server, agents = fleet
    repo = _repo()
    digest = _push(server, repo)
    _managed_pull(server, "h1", repo)
    r = httpx.delete(f"{server.url}/admin/v1/images", params={"reference": f"{repo}:v1", "dry_run": "true"})
    assert r.status_code == 200 and r.json()["hosts_holding"] == ["h1"]
    out = cli_json(server, "image", "delete", f"{repo}:v1")
    assert out["deleted"] and out["hosts_holding"] == ["h1"] and out["digest"] == digest
    assert image_row(server, "h1", digest) is not None  # the host copy stays, accounted for

    used_repo = _repo()
    used = _push(server, used_repo, "old")
    create_container(agents["h3"], "prune-user", used_repo, "old")
    _push(server, used_repo, "new")
    with server.client() as c:  # untag the used image: only the host's container keeps it now
        assert c.delete(f"/v2/{used_repo}/manifests/old").status_code == 202
    wait_for(lambda: image_row(server, "h3", used), what="the container's image in h3's inventory")
    plan = cli_json(server, "prune", "--keep-recent", "1", "--repository", used_repo)
    kept = {d["digest"]: d["keep"] for r in plan["repositories"] for d in r["kept"]}
    assert any("in use" in why for why in kept[used]), plan


def _kill_at(server, agent: AgentProcess, point: str, request: tuple[str, str]):
    faults = agent.images_dir.parent / f"faults-{point}"
    faults.mkdir(exist_ok=True)
    agent.stop()
    agent.env = {"DOCKYARD_FAULTS_DIR": str(faults)}
    (faults / f"{point}.hold").touch()
    agent.start()
    queue(server, "h2", *request)
    wait_for(lambda: (faults / f"{point}.reached").exists(), what=f"the agent at {point}")
    agent.stop(signal.SIGKILL)
    agent.env = {}


def test_agent_killed_mid_pull_and_mid_delete(fleet):
    server, agents = fleet
    agent = agents["h2"]
    agent.start() if agent.proc.poll() is not None else None
    repo = _repo()
    with server.client() as c:
        digest, _, _ = push_image(c, repo, "v1", f"kill-{uuid.uuid4().hex[:6]}", layers=3)
    key = digest.replace(":", "-")
    _kill_at(server, agent, "agent.pull_blob_written", ("pull", f"{repo}:v1"))
    assert files_under(agent.images_dir / "tmp")  # it was mid-pull: a partial download exists
    assert not (agent.images_dir / "tars" / f"{key}.tar").exists()
    assert image_row(server, "h2", digest) is None
    agent.start()
    row = wait_for(lambda: image_row(server, "h2", digest), what="the pull to finish after restart")
    assert row["managed"] and files_under(agent.images_dir / "tmp") == []
    tar = agent.images_dir / "tars" / f"{key}.tar"
    import tarfile

    with tarfile.open(tar) as t:  # complete and verified: every blob hashes to its name
        for m in t.getmembers():
            if m.name.startswith("blobs/sha256/"):
                assert sha256(t.extractfile(m).read()) == "sha256:" + m.name.rsplit("/", 1)[1]

    _kill_at(server, agent, "agent.delete_runtime_removed", ("delete", f"{repo}:v1"))
    assert not (agent.images_dir / "runtime" / key).exists() and tar.exists()  # half done
    assert image_row(server, "h2", digest)["delete"]["state"] == "pending"
    agent.start()
    wait_for(lambda: image_row(server, "h2", digest) is None, what="the delete to finish after restart")
    assert [f for f in files_under(agent.images_dir) if key in f] == []
    assert files_under(agent.images_dir / "tmp") == []


@pytest.mark.parametrize("body", [b"[" * 5000 + b"]" * 5000 + b"\n", b'{"repository": "team/a", "digest": "x"}\n',
                                  b'{"repository": "team/a", "digest": "sha256:' + b"a" * 64 + b'", "bytes": -1}\n',
                                  b'{"repository": "team/a", "digest": "sha256:' + b"a" * 64 + b'", "containers": 5}\n',
                                  b"not json\n", b"[1]\n"])
def test_bad_inventories_get_a_400(fleet, body):
    server, agents = fleet
    before = {i["digest"] for i in host_images(server, "h3")["images"]}
    r = httpx.put(f"{server.url}/admin/v1/hosts/h3/inventory", content=body,
                  headers={"Authorization": f"Bearer {agents['h3'].token}"})
    assert r.status_code == 400 and r.json()["errors"][0]["code"] in ("UNSUPPORTED", "DIGEST_INVALID"), r.text
    assert {i["digest"] for i in host_images(server, "h3")["images"]} == before
    for bad in ({"results": "x"}, {"results": [{"id": "1"}]}, [1]):
        r = httpx.post(f"{server.url}/admin/v1/hosts/h3/work/results", json=bad,
                       headers={"Authorization": f"Bearer {agents['h3'].token}"})
        assert r.status_code == 400, r.text
    r = httpx.get(f"{server.url}/admin/v1/hosts/h3/work", params={"wait": "soon"})
    assert r.status_code == 400
