"""``dockyard agent --runtime podman`` against the real podman CLI (its own storage root, vfs
driver, so nothing of the machine's podman is touched). Skipped, with the reason, where podman
is missing or cannot load an image here (no user namespaces, no storage driver)."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid

import httpx
import pytest

from tests.e2e.hosts_support import AgentProcess, image_row, queue, wait_for
from tests.support import push_image, start_server


def _podman_args(root) -> list[str]:
    return [f"--root={root}/storage", f"--runroot={root}/run", "--storage-driver=vfs"]


@pytest.fixture(scope="module")
def podman_agent(tmp_path_factory):
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (apt-get install -y podman)")
    root = tmp_path_factory.mktemp("podman")
    probe = subprocess.run(["podman", *_podman_args(root / "probe"), "images"], capture_output=True, text=True,
                           timeout=120)
    if probe.returncode != 0:
        pytest.skip(f"podman cannot run in this sandbox: {probe.stderr.strip()[:300]}")
    server = start_server(root / "data")
    token = httpx.post(f"{server.url}/admin/v1/hosts/p1", timeout=10).json()["token"]
    args = ["--runtime", "podman", *[f"--podman-arg={a}" for a in _podman_args(root)], "--poll-interval", "0.2s",
            "--inventory-interval", "0.5s"]
    agent = AgentProcess(server, "p1", token, root / "p1" / "images", args, {}).start()
    try:
        yield server, agent, ["podman", *_podman_args(root)]
    finally:
        agent.stop()
        server.stop()
        subprocess.run(["podman", *_podman_args(root), "rm", "-af"], capture_output=True, timeout=120)
        subprocess.run(["podman", *_podman_args(root), "rmi", "-af"], capture_output=True, timeout=120)
        assert "Traceback" not in agent.log(), agent.log()


def test_podman_managed_pull_refused_delete_and_delete(podman_agent):
    server, agent, podman = podman_agent
    repo = f"team/p{uuid.uuid4().hex[:8]}"
    with server.client() as c:
        digest, _, _ = push_image(c, repo, "v1", f"podman-{repo}")
    queue(server, "p1", "pull", f"{repo}:v1")
    row = wait_for(lambda: image_row(server, "p1", digest), what="the managed image on p1")
    assert row["managed"] and row["repository"] == repo and row["tag"] == "v1"
    listed = json.loads(subprocess.run([*podman, "images", "--format", "json"], capture_output=True, text=True,
                                       check=True).stdout)
    assert digest in [i["Digest"] for i in listed]

    name = f"c{uuid.uuid4().hex[:6]}"
    subprocess.run([*podman, "create", "--name", name, f"{server.host}/{repo}:v1", "/bin/true"], check=True,
                   capture_output=True)
    wait_for(lambda: (image_row(server, "p1", digest) or {}).get("containers") == [name], what="container in use")
    queue(server, "p1", "delete", f"{repo}:v1")
    failed = wait_for(lambda: (r := image_row(server, "p1", digest)) and (r["delete"] or {}).get("state") == "failed"
                      and r, what="podman to refuse")
    assert "in use" in failed["delete"]["error"]

    subprocess.run([*podman, "rm", name], check=True, capture_output=True)
    queue(server, "p1", "delete", f"{repo}:v1")
    wait_for(lambda: image_row(server, "p1", digest) is None, what="the delete to complete")
    listed = json.loads(subprocess.run([*podman, "images", "--format", "json"], capture_output=True, text=True,
                                       check=True).stdout)
    assert digest not in [i["Digest"] for i in listed]
    assert not list((agent.images_dir / "tars").iterdir()) and not list((agent.images_dir / "tmp").iterdir())
    with server.client() as c:
        assert c.get(f"/v2/{repo}/manifests/v1").status_code == 200  # the registry's copy stays
