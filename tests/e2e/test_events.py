"""Events reach a real HTTP receiver on loopback that goes down and comes back: every event
arrives, signatures verify, per-repository order holds, duplicates only from retries; an
endpoint that stays down does not hold requests back."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from dockyard import events as ev
from tests.support import push_image, start_server
from tests.webhook_receiver import Receiver

SECRET = "s3cret-for-tests"


def _wait(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def _server(tmp_path, database_url, receiver, down_port):
    notifications = {
        "main": {"url": receiver.url, "secret": SECRET, "timeout": "2s"},
        "down": {"url": f"http://127.0.0.1:{down_port}/never", "events": ["push"], "timeout": "1s"},
    }
    return start_server(tmp_path / "data", database_url=database_url, extra_env={
        "DOCKYARD_NOTIFICATIONS": json.dumps(notifications), "DOCKYARD_NOTIFICATIONS_INTERVAL": "0.1s",
        "DOCKYARD_NOTIFICATIONS_BACKOFF_MAX": "0.5s", "DOCKYARD_SCRUB_ENABLED": "false"})


def test_every_event_arrives_signed_in_order(tmp_path, backend, database_url, receiver):
    if backend == "s3":
        pytest.skip("events do not depend on the storage driver")
    from tests.support import free_port

    srv = _server(tmp_path, database_url, receiver, free_port())
    try:
        with srv.client() as c:
            t0 = time.monotonic()
            digests = {}
            for i in range(4):
                for repo in ("ev/a", "ev/b"):
                    digests[(repo, i)] = push_image(c, repo, f"v{i}", f"{repo}-{i}", layers=1)[0]
            _wait(lambda: len(receiver.events()) >= 8, what="first pushes delivered")
            receiver.stop()  # the endpoint goes down; requests go on
            receiver.fail_next = 0
            for i in range(4, 7):
                push_image(c, "ev/a", f"v{i}", f"ev/a-{i}", layers=1)
            assert c.delete("/v2/ev/a/manifests/v0").status_code == 202
            assert c.delete(f"/v2/ev/b/manifests/{digests[('ev/b', 1)]}").status_code == 202
            r = c.post("/admin/v1/trash/restore", params={"reference": f"ev/b@{digests[('ev/b', 1)]}"})
            assert r.status_code == 200, r.text
            assert c.delete(f"/v2/ev/b/manifests/{digests[('ev/b', 2)]}").status_code == 202
            r = c.post("/admin/v1/trash/purge", params={"reference": f"ev/b@{digests[('ev/b', 2)]}"})
            assert r.status_code == 200, r.text
            # a second endpoint down all along and the first one down now: pushes stay fast
            assert time.monotonic() - t0 < 30
            time.sleep(1.0)  # several failed attempts with backoff
            receiver.fail_next = 2  # comes back, but answers 500 twice first
            receiver.start()
            listing = c.get("/admin/v1/events", params={"limit": 1000}).json()
            outbox = {e["id"]: e for e in listing["events"]}
            _wait(lambda: {e["id"] for e in receiver.events()} >= set(outbox), what="every event delivered")
            listing = c.get("/admin/v1/events", params={"limit": 1000}).json()
    finally:
        srv.stop()
    cli = [sys.executable, "-m", "dockyard", "events", "--data-dir", str(srv.data_dir), "--limit", "3"]
    env = {**srv.env, "DOCKYARD_DATABASE_URL": database_url}
    out = subprocess.run(cli + ["--output", "json"], env=env, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    assert [e["id"] for e in json.loads(out.stdout)["events"]] == sorted(outbox, reverse=True)[:3]
    table = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60).stdout
    assert "purge" in table and "endpoint main: delivered" in table and "endpoint down: delivered 0" in table
    kinds = [e["kind"] for e in sorted(outbox.values(), key=lambda e: e["id"])]
    assert kinds.count("push") == 11 and kinds.count("delete") == 3
    assert kinds.count("restore") == 1 and kinds.count("purge") == 1
    got = receiver.deliveries()
    for headers, body in got:
        assert ev.verify(SECRET, body, headers["x-dockyard-signature"]), headers
        assert headers["x-dockyard-event"] == json.loads(body)["kind"]
    received = [json.loads(b) for _, b in got]
    ids = [e["id"] for e in received]
    assert set(ids) == set(outbox)  # nothing lost, nothing invented
    # duplicates only from a retry: a redelivery is of the event that was in flight
    first_seen: list[int] = []
    for i in ids:
        if i not in first_seen:
            first_seen.append(i)
    for repo in ("ev/a", "ev/b"):
        seq = [i for i in first_seen if outbox[i]["repository"] == repo]
        assert seq == sorted(seq), (repo, seq)
    assert len(ids) - len(set(ids)) <= 1
    # what the receiver got is what the outbox holds
    by_id = {e["id"]: e for e in received}
    for i, e in outbox.items():
        assert by_id[i]["kind"] == e["kind"] and by_id[i]["repository"] == e["repository"]
        assert by_id[i].get("digest") == e.get("digest")
    pushes = [by_id[i] for i in by_id if by_id[i]["kind"] == "push"]
    assert {(p["repository"], p["tag"]) for p in pushes} >= {("ev/a", "v0"), ("ev/b", "v3"), ("ev/a", "v6")}
    assert all(state == "delivered" for e in listing["events"] for name, state in e["deliveries"].items()
               if name == "main")
    down = listing["endpoints"]["down"]
    assert down["delivered"] == 0 and down["attempts"] >= 1 and down["last_error"]
    assert all(e["deliveries"]["down"] in ("pending", "not subscribed") for e in listing["events"])
