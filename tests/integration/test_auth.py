"""htpasswd basic auth, bearer tokens and the roles pull < push < admin, on a real server."""

import bcrypt
import httpx
import pytest

from tests.support import push_blob, push_image, start_server

USERS = {"alice": "admin", "bob": "push", "carol": "pull"}


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("auth")
    htpasswd = data / "htpasswd"
    htpasswd.write_text("".join(
        f"{u}:{bcrypt.hashpw(f'{u}-pw'.encode(), bcrypt.gensalt(rounds=4)).decode().replace('$2b$', '$2y$')}\n"
        for u in USERS))
    proc = start_server(data, extra_env={
        "DOCKYARD_AUTH_HTPASSWD": str(htpasswd),
        "DOCKYARD_AUTH_ROLES": ",".join(f"{u}={r}" for u, r in USERS.items()),
    })
    yield proc
    proc.stop()


def test_anonymous_gets_a_bearer_challenge(auth_server):
    r = httpx.get(auth_server.url + "/v2/")
    assert r.status_code == 401
    assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
    challenge = r.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="http://127.0.0.1:') and 'service="dockyard"' in challenge


def test_basic_auth_and_roles(auth_server):
    bob = httpx.Client(base_url=auth_server.url, auth=("bob", "bob-pw"))
    carol = httpx.Client(base_url=auth_server.url, auth=("carol", "carol-pw"))
    assert bob.get("/v2/").status_code == 200
    digest, _, _ = push_image(bob, "team/app", "v1", "auth")
    assert carol.get("/v2/team/app/manifests/v1").status_code == 200
    r = carol.post("/v2/team/app/blobs/uploads/")
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED"
    r = bob.delete("/admin/v1/repositories/team/app")
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED"
    r = httpx.get(auth_server.url + "/v2/", auth=("bob", "wrong"))
    assert r.status_code == 401


def test_token_flow_and_admin(auth_server):
    r = httpx.get(auth_server.url + "/auth/token", params={"service": "dockyard",
                                                          "scope": "repository:admin/test:pull,push"},
                  auth=("alice", "alice-pw"))
    assert r.status_code == 200
    token = r.json()["token"]
    alice = httpx.Client(base_url=auth_server.url, headers={"Authorization": f"Bearer {token}"})
    push_blob(alice, "admin/test", b"admin data")
    r = alice.post("/v2/admin/other/blobs/uploads/")  # the token is for admin/test only: ask for another
    assert r.status_code == 401 and 'scope="repository:admin/other:pull,push"' in r.headers["WWW-Authenticate"]
    assert alice.delete("/admin/v1/repositories/admin/test").status_code == 202
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    r = httpx.get(auth_server.url + "/v2/", headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401
    r = httpx.get(auth_server.url + "/auth/token", auth=("alice", "nope"))
    assert r.status_code == 401


@pytest.mark.parametrize("method,path", [
    ("POST", "/admin/v1/gc"), ("GET", "/admin/v1/gc"), ("POST", "/admin/v1/scrub"), ("GET", "/admin/v1/trash"),
    ("POST", "/admin/v1/trash/restore?reference=a@sha256:" + "0" * 64),
    ("POST", "/admin/v1/trash/purge?reference=a@sha256:" + "0" * 64),
    ("GET", "/admin/v1/policies"), ("PUT", "/admin/v1/policies/x"), ("POST", "/admin/v1/prune?policy=x"),
    ("GET", "/admin/v1/prune/audit"), ("DELETE", "/admin/v1/repositories/a"), ("POST", "/admin/v1/fsck"),
    ("GET", "/admin/v1/events"), ("GET", "/admin/v1/quotas"), ("GET", "/admin/v1/quotas/x"),
    ("PUT", "/admin/v1/quotas/x"), ("DELETE", "/admin/v1/quotas/x"),
])
def test_every_admin_call_needs_the_admin_role(auth_server, method, path):
    r = httpx.request(method, auth_server.url + path, auth=("bob", "bob-pw"))
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED"
    r = httpx.request(method, auth_server.url + path)
    assert r.status_code == 401


def test_admin_calls_work_for_admin(auth_server):
    alice = httpx.Client(base_url=auth_server.url, auth=("alice", "alice-pw"))
    r = alice.put("/admin/v1/policies/nightly", json={"keep_tag_revisions": 2, "repositories": ["team/*"]})
    assert r.status_code == 201
    assert alice.get("/admin/v1/policies").json()["nightly"]["keep_tag_revisions"] == 2
    r = alice.put("/admin/v1/policies/bad", json={"repositories": ["*"]})
    assert r.status_code == 400 and "delete everything" in r.text
    r = alice.post("/admin/v1/prune", params={"policy": "nightly"})
    assert r.status_code == 200 and r.json()["confirmed"] is False
    assert alice.get("/admin/v1/prune/audit").json()[0]["policy"] == "nightly"
    assert alice.post("/admin/v1/gc", params={"dry_run": "true"}).json()["dry_run"] is True
    assert "backlog" in alice.get("/admin/v1/gc").json()
    assert set(alice.get("/admin/v1/trash").json()) == {"images", "tags"}
    assert alice.delete("/admin/v1/policies/nightly").status_code == 204
