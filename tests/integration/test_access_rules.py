"""Access rules per repository (dockyard.access), route by route, on a real server process.

alice pushes team-a/*, carol pushes team-b/*, every signed-in user and anonymous pull public/*,
root is a global admin. Each route is tried by someone who may and someone who may not."""

import bcrypt
import httpx
import pytest

from tests.support import OCI_MANIFEST, push_image, sha256, start_server

USERS = ["root", "alice", "carol"]
CONFIG = '''
auth_roles = { root = "admin" }
[groups]
team-a = ["alice"]
team-b = ["carol"]
[[access]]
repositories = "team-a/*"
groups = ["team-a"]
role = "push"
[[access]]
repositories = "team-b/*"
groups = ["team-b"]
role = "push"
[[access]]
repositories = "public/*"
users = ["*", "anonymous"]
role = "pull"
'''


class World:
    def __init__(self, server):
        self.url = server.url
        self.root = self.client("root")
        self.alice = self.client("alice")
        self.carol = self.client("carol")
        self.anon = httpx.Client(base_url=server.url, timeout=30)
        self.images = {}
        for repo in ("team-a/app", "team-b/app", "public/base"):
            self.images[repo] = push_image(self.root, repo, "v1", repo)

    def client(self, user):
        return httpx.Client(base_url=self.url, auth=(user, f"{user}-pw"), timeout=30)

    def layer(self, repo):
        return sha256(self.images[repo][2][1])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    data = tmp_path_factory.mktemp("access")
    htpasswd = data / "htpasswd"
    htpasswd.write_text("".join(f"{u}:{bcrypt.hashpw(f'{u}-pw'.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"
                                for u in USERS))
    conf = data / "dockyard.toml"
    conf.write_text(f'auth_htpasswd = "{htpasswd}"\n' + CONFIG)
    proc = start_server(data, args=["--config", str(conf)])
    try:
        yield World(proc)
    finally:
        proc.stop()


def denied(r):
    assert r.status_code == 403, (r.status_code, r.text)
    assert r.json()["errors"][0]["code"] == "DENIED"


def challenged(r, scope=None):
    assert r.status_code == 401, (r.status_code, r.text)
    assert r.headers["WWW-Authenticate"].startswith("Bearer realm=")
    if scope:
        assert f'scope="{scope}"' in r.headers["WWW-Authenticate"]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_manifest_get_head(world, method):
    assert world.alice.request(method, "/v2/team-a/app/manifests/v1").status_code == 200
    assert world.alice.request(method, "/v2/public/base/manifests/v1").status_code == 200
    assert world.anon.request(method, "/v2/public/base/manifests/v1").status_code == 200
    r = world.alice.request(method, "/v2/team-b/app/manifests/v1")
    assert r.status_code == 403
    if method == "GET":
        denied(r)
    challenged(world.anon.request(method, "/v2/team-b/app/manifests/v1"), "repository:team-b/app:pull")
    assert world.carol.request(method, "/v2/team-b/app/manifests/v1").status_code == 200


def test_manifest_put_and_delete(world):
    digest, manifest, _ = world.images["team-b/app"]
    denied(world.alice.put("/v2/team-b/app/manifests/stolen", content=manifest,
                           headers={"Content-Type": OCI_MANIFEST}))
    denied(world.alice.put("/v2/public/base/manifests/v2", content=world.images["public/base"][1],
                           headers={"Content-Type": OCI_MANIFEST}))  # pull only
    challenged(world.anon.put("/v2/public/base/manifests/v2", content=manifest,
                              headers={"Content-Type": OCI_MANIFEST}), "repository:public/base:pull,push")
    denied(world.alice.delete(f"/v2/team-b/app/manifests/{digest}"))
    assert world.carol.get("/v2/team-b/app/manifests/v1").status_code == 200  # still there
    mine, _, _ = push_image(world.alice, "team-a/tmp", "v1", "alice-tmp")
    assert world.alice.delete(f"/v2/team-a/tmp/manifests/{mine}").status_code == 202
    denied(world.carol.delete(f"/v2/team-a/app/manifests/{world.images['team-a/app'][0]}"))


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_blob_get_head(world, method):
    assert world.alice.request(method, f"/v2/team-a/app/blobs/{world.layer('team-a/app')}").status_code == 200
    assert world.alice.request(method, f"/v2/public/base/blobs/{world.layer('public/base')}").status_code == 200
    r = world.alice.request(method, f"/v2/team-b/app/blobs/{world.layer('team-b/app')}")
    assert r.status_code == 403
    challenged(world.anon.request(method, f"/v2/team-b/app/blobs/{world.layer('team-b/app')}"))


def test_upload_post_patch_put(world):
    denied(world.alice.post("/v2/team-b/app/blobs/uploads/"))
    denied(world.alice.post("/v2/public/base/blobs/uploads/"))
    data = b"carol's chunk"
    r = world.carol.post("/v2/team-b/app/blobs/uploads/")
    assert r.status_code == 202
    location = r.headers["Location"]
    denied(world.alice.patch(location, content=data, headers={"Content-Type": "application/octet-stream"}))
    denied(world.alice.put(location, params={"digest": sha256(data)}, content=data))
    denied(world.alice.get(location))
    denied(world.alice.delete(location))
    r = world.carol.put(location, params={"digest": sha256(data)}, content=data)  # the session is intact
    assert r.status_code == 201, r.text
    r = world.alice.post("/v2/team-a/app/blobs/uploads/")
    assert r.status_code == 202
    assert world.alice.patch(r.headers["Location"], content=data).status_code == 202


def test_cross_repository_mount_needs_pull_on_the_source(world):
    secret = world.layer("team-b/app")
    # from a repository alice may not pull: an ordinary upload session, nothing mounted or revealed
    r = world.alice.post("/v2/team-a/mounted/blobs/uploads/", params={"mount": secret, "from": "team-b/app"})
    assert r.status_code == 202 and "Docker-Content-Digest" not in r.headers
    assert world.alice.head(f"/v2/team-a/mounted/blobs/{secret}").status_code == 404
    # nor without a source (automatic mount would search every repository)
    r = world.alice.post("/v2/team-a/mounted/blobs/uploads/", params={"mount": secret})
    assert r.status_code == 202
    assert world.alice.head(f"/v2/team-a/mounted/blobs/{secret}").status_code == 404
    # from a repository she may pull, it mounts
    public = world.layer("public/base")
    r = world.alice.post("/v2/team-a/mounted/blobs/uploads/", params={"mount": public, "from": "public/base"})
    assert r.status_code == 201 and r.headers["Docker-Content-Digest"] == public
    assert world.alice.head(f"/v2/team-a/mounted/blobs/{public}").status_code == 200
    # a global admin still mounts without a source
    r = world.root.post("/v2/team-a/mounted/blobs/uploads/", params={"mount": secret})
    assert r.status_code == 201


def test_tags_list_and_referrers(world):
    assert world.alice.get("/v2/team-a/app/tags/list").json()["tags"] == ["v1"]
    denied(world.alice.get("/v2/team-b/app/tags/list"))
    challenged(world.anon.get("/v2/team-b/app/tags/list"))
    assert world.anon.get("/v2/public/base/tags/list").status_code == 200
    subject = world.images["team-b/app"][0]
    denied(world.alice.get(f"/v2/team-b/app/referrers/{subject}"))
    assert world.carol.get(f"/v2/team-b/app/referrers/{subject}").status_code == 200


def _catalog(client, n=None):
    names, url, params = [], "/v2/_catalog", {"n": n} if n else {}
    while url:
        r = client.get(url, params=params)
        assert r.status_code == 200, r.text
        names += r.json()["repositories"]
        link = r.headers.get("Link")
        url, params = (link.split(";")[0].strip("<>"), None) if link else (None, None)
    return names


def test_catalog_lists_only_what_the_caller_may_pull(world):
    for i in range(3):
        push_image(world.carol, f"team-b/more-{i}", "v1", f"more-{i}", layers=1)
    everything = _catalog(world.root)
    assert {"team-a/app", "team-b/app", "public/base", "team-b/more-2"} <= set(everything)
    alice = _catalog(world.alice)
    assert alice == sorted(n for n in everything if n.startswith(("team-a/", "public/")))
    assert _catalog(world.alice, n=1) == alice  # paging: one per page, nothing lost or repeated
    carol = _catalog(world.carol, n=2)
    assert carol == sorted(n for n in everything if n.startswith(("team-b/", "public/")))
    assert _catalog(world.anon) == ["public/base"]


def test_version_check_and_admin(world):
    assert world.alice.get("/v2/").status_code == 200  # may pull somewhere: docker login works
    # without credentials: a challenge (so clients that hold some send them), and an anonymous
    # token opens /v2/ since anonymous pulls public/*
    challenged(world.anon.get("/v2/"))
    anon = httpx.Client(base_url=world.url, headers={"Authorization": "Bearer " + _token(world, None)})
    assert anon.get("/v2/").status_code == 200
    denied(world.alice.get("/admin/v1/gc"))  # rules give no administration
    denied(world.alice.delete("/admin/v1/repositories/team-a/app"))
    assert world.root.get("/admin/v1/gc").status_code == 200


def _token(world, user, *scopes):
    auth = (user, f"{user}-pw") if user else None
    r = httpx.get(world.url + "/auth/token", params=[("service", "dockyard")] + [("scope", s) for s in scopes],
                  auth=auth)
    assert r.status_code == 200, r.text
    return r.json()["token"]


def test_tokens_grant_only_what_the_rules_allow_and_only_where_asked(world):
    token = _token(world, "alice", "repository:team-a/app:pull,push", "repository:team-b/app:pull,push",
                   "repository:public/base:pull,push")
    import base64
    import json
    body = token.split(".")[0]
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert {g["name"]: g["actions"] for g in claims["access"]} == {
        "team-a/app": ["pull", "push"], "team-b/app": [], "public/base": ["pull"]}
    bearer = httpx.Client(base_url=world.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert bearer.get("/v2/team-a/app/manifests/v1").status_code == 200
    assert bearer.post("/v2/team-a/app/blobs/uploads/").status_code == 202
    denied(bearer.get("/v2/team-b/app/manifests/v1"))
    denied(bearer.post("/v2/public/base/blobs/uploads/"))
    # a repository the token was not asked for: a new token is needed (401 with its scope)
    challenged(bearer.get("/v2/team-a/other/tags/list"), "repository:team-a/other:pull")
    # a token cannot be widened by editing it
    forged = base64.urlsafe_b64encode(json.dumps(
        {**claims, "access": [{"type": "repository", "name": "team-b/app", "actions": ["pull"]}]}).encode())
    r = httpx.get(world.url + "/v2/team-b/app/manifests/v1",
                  headers={"Authorization": f"Bearer {forged.decode().rstrip('=')}.{token.split('.')[1]}"})
    challenged(r)
    # anonymous tokens: public pulls only
    anon = httpx.Client(base_url=world.url, timeout=30, headers={
        "Authorization": "Bearer " + _token(world, None, "repository:public/base:pull", "repository:team-a/app:pull")})
    assert anon.get("/v2/public/base/manifests/v1").status_code == 200
    challenged(anon.get("/v2/team-a/app/manifests/v1"))
    # a cross-repository mount with a token needs the source in the token as well
    public = world.layer("public/base")
    only_target = httpx.Client(base_url=world.url, timeout=30, headers={
        "Authorization": "Bearer " + _token(world, "alice", "repository:team-a/m2:pull,push")})
    r = only_target.post("/v2/team-a/m2/blobs/uploads/", params={"mount": public, "from": "public/base"})
    assert r.status_code == 202
    both = httpx.Client(base_url=world.url, timeout=30, headers={
        "Authorization": "Bearer " + _token(world, "alice", "repository:team-a/m2:pull,push",
                                            "repository:public/base:pull")})
    r = both.post("/v2/team-a/m2/blobs/uploads/", params={"mount": public, "from": "public/base"})
    assert r.status_code == 201



def test_skopeo_follows_the_per_repository_token_flow(world, tmp_path):
    """A real client (containers/image) asks /auth/token for each repository's scope; it pushes
    and copies where the rules allow it, and is refused elsewhere."""
    from tests.conftest import require_tool
    from tests.e2e.images import build_image_layout
    from tests.e2e.test_skopeo import Skopeo

    class Server:
        host, log_path = world.url.split("://", 1)[1], tmp_path / "none.log"

        def log(self):
            return ""

    skopeo = Skopeo(require_tool("skopeo"), tmp_path / "home", Server())
    src = build_image_layout(tmp_path / "src", "v1", "skopeo-access", layer_sizes=(100,))
    creds = ("--dest-creds", "alice:alice-pw")
    skopeo.push(f"oci:{src.root}:v1", "team-a/skopeo", "v1", *creds)
    assert world.alice.get("/v2/team-a/skopeo/tags/list").json()["tags"] == ["v1"]
    # copy between repositories (a mount from team-a/skopeo into team-a/copy)
    skopeo.run("copy", "--retry-times", "0", "--src-tls-verify=false", "--dest-tls-verify=false",
               "--src-creds", "alice:alice-pw", *creds, skopeo.ref("team-a/skopeo", "v1"), skopeo.ref("team-a/copy", "v1"))
    assert world.alice.head("/v2/team-a/copy/manifests/v1").status_code == 200
    out = skopeo.run("copy", "--retry-times", "0", "--dest-tls-verify=false", *creds,
                     f"oci:{src.root}:v1", skopeo.ref("team-b/skopeo", "v1"), check=False)
    assert out.returncode != 0 and b"403 (forbidden)" in out.stderr.lower()
    assert world.carol.get("/v2/team-b/skopeo/tags/list").status_code == 404
