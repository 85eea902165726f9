"""The registry's side of hosts (issue 12), in process, on SQLite and PostgreSQL: credentials,
inventories, work and its confirmation, deletes that report host copies, prune."""

from __future__ import annotations

import pytest

from dockyard.errors import RegistryError
from dockyard.hosts import service
from dockyard.lifecycle import deletes, inuse
from dockyard.lifecycle.prune import Pruner
from dockyard.policies import Policy
from tests.lifecycle_support import make_registry, put_image


@pytest.fixture
def reg(tmp_path, backend):
    if backend == "s3":
        pytest.skip("storage plays no part here")
    with make_registry(tmp_path, backend) as r:
        yield r


def _image(digest: str, repo: str = "team/app", **extra) -> dict:
    return {"repository": repo, "tag": "v1", "digest": digest, "managed": False, "bytes": 10, "pulled_at": 1.0,
            "last_used": None, "containers": [], **extra}


D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


def test_tokens_are_stored_hashed_and_revocable(reg):
    token = service.add_host(reg, "h1")
    assert service.host_for_token(reg, token) == "h1"
    with pytest.raises(RegistryError):
        service.add_host(reg, "h1")  # active: no second token
    with reg.db.read() as conn:
        stored = conn.exec_driver_sql("SELECT token_hash FROM hosts").scalar()
    assert token not in stored and stored == service.token_hash(token)
    assert service.remove_host(reg, "h1")
    assert service.host_for_token(reg, token) is None
    again = service.add_host(reg, "h1")
    assert service.host_for_token(reg, again) == "h1" and service.host_for_token(reg, token) is None
    for bad in ("", "../x", "a" * 64, "a b"):
        with pytest.raises(RegistryError):
            service.add_host(reg, bad)


def test_inventory_replaces_rows_and_managed_stays_managed(reg):
    service.add_host(reg, "h1")
    service.add_host(reg, "h2")
    assert service.inventory(reg, "h1", [_image(D1, managed=True), _image(D2), _image(D3)])["added"] == 3
    service.inventory(reg, "h2", [_image(D1)])
    counts = service.inventory(reg, "h1", [_image(D1, managed=False), _image(D2, containers=["c1"], bytes=20)])
    assert counts == {"images": 2, "added": 0, "updated": 1, "removed": 1}
    rows = {i["digest"]: i for i in service.host_images(reg, "h1")["images"]}
    assert set(rows) == {D1, D2} and rows[D1]["managed"] and rows[D2]["containers"] == ["c1"]
    assert rows[D2]["bytes"] == 20
    assert [i["digest"] for i in service.host_images(reg, "h2")["images"]] == [D1]  # other host untouched
    hosts = {h["name"]: h for h in service.list_hosts(reg)}
    assert hosts["h1"]["images"] == 2 and hosts["h1"]["bytes"] == 30 and hosts["h1"]["state"] == "up"


def test_work_leaves_only_when_confirmed_and_failures_stay(reg):
    digest, _ = put_image(reg, "team/app", "v1", "work")
    service.add_host(reg, "h1")
    service.add_host(reg, "h2")
    with pytest.raises(RegistryError) as e:
        service.request(reg, "h1", "pull", "team/app:nope", None)
    assert e.value.code == "MANIFEST_UNKNOWN"
    with pytest.raises(RegistryError) as e:
        service.request(reg, "h1", "delete", "team/app:v1", None)  # the host holds nothing yet
    assert e.value.code == "MANIFEST_UNKNOWN"
    with pytest.raises(RegistryError) as e:
        service.request(reg, "h1", "pull", "team/app@sha256:" + "9" * 64, None)
    assert e.value.code == "MANIFEST_UNKNOWN"
    assert service.request(reg, "h2", "pull", f"team/app@{digest}", None)["kind"] == "pull"
    pull = service.request(reg, "h1", "pull", "team/app:v1", "admin")
    assert [w["id"] for w in service.poll(reg, "h1")] == [pull["id"]]
    assert [w["reference"] for w in service.poll(reg, "h2")] == [digest]  # each host its own work
    assert service.confirm(reg, "h2", [{"id": pull["id"], "ok": True, "image": _image(digest)}])["done"] == 0
    service.confirm(reg, "h1", [{"id": pull["id"], "ok": True, "image": _image(digest)}])
    assert service.poll(reg, "h1") == []
    assert service.host_images(reg, "h1")["images"][0]["managed"]

    dry = service.request(reg, "h1", "delete", "team/app:v1", None, dry_run=True)
    assert dry["bytes"] == 10 and service.poll(reg, "h1") == []
    delete = service.request(reg, "h1", "delete", "team/app:v1", None)
    service.confirm(reg, "h1", [{"id": delete["id"], "ok": False, "error": "image is in use by container(s) c"}])
    row = service.host_images(reg, "h1")["images"][0]
    assert row["delete"]["state"] == "failed" and "in use" in row["delete"]["error"]
    assert service.poll(reg, "h1") == []  # a failure is not retried by itself
    again = service.request(reg, "h1", "delete", f"team/app@{digest}", None)
    assert again["id"] == delete["id"] and service.host_images(reg, "h1")["images"][0]["delete"]["state"] == "pending"
    service.confirm(reg, "h1", [{"id": delete["id"], "ok": True}])
    assert service.host_images(reg, "h1") ["images"] == [] and service.poll(reg, "h1") == []


def test_registry_delete_lists_host_copies_and_prune_keeps_host_in_use(reg):
    used, _ = put_image(reg, "team/app", "old", "used")
    reg.clock.advance(10)
    put_image(reg, "team/app", "new", "new")
    service.add_host(reg, "h1")
    service.add_host(reg, "h2")
    service.inventory(reg, "h1", [_image(used, tag="old", containers=["web-1"])])
    service.inventory(reg, "h2", [_image(used, tag="old")])
    deletes.delete_manifest(reg, "team/app", "old")  # untagged: only the container keeps it
    plan = Pruner(reg, Policy.parse("t", {"keep_recent": 1}), inuse.InUse()).run()
    kept = {d.digest: d.keep for r in plan.repositories for d in r.kept}
    assert used in kept and any("in use" in k for k in kept[used])
    service.inventory(reg, "h1", [_image(used, tag="old")])  # the container is gone
    plan = Pruner(reg, Policy.parse("t", {"keep_recent": 1}), inuse.InUse()).run()
    assert used in {d.digest for r in plan.repositories for d in r.deleted}

    report = service.delete_in_registry(reg, f"team/app@{used}", "admin")
    assert report["hosts_holding"] == ["h1", "h2"] and report["deleted"]
    assert len(service.host_images(reg, "h1")["images"]) == 1  # host copies are never touched
    assert deletes.delete_repository(reg, "team/app").hosts_holding == ("h1", "h2")
