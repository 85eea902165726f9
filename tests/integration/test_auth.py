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
    r = httpx.get(auth_server.url + "/auth/token", params={"service": "dockyard", "scope": "repository:x:pull"},
                  auth=("alice", "alice-pw"))
    assert r.status_code == 200
    token = r.json()["token"]
    alice = httpx.Client(base_url=auth_server.url, headers={"Authorization": f"Bearer {token}"})
    push_blob(alice, "admin/test", b"admin data")
    assert alice.delete("/admin/v1/repositories/admin/test").status_code == 202
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    r = httpx.get(auth_server.url + "/v2/", headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401
    r = httpx.get(auth_server.url + "/auth/token", auth=("alice", "nope"))
    assert r.status_code == 401
