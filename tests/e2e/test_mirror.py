"""End-to-end: the pull-through mirror (issue 11) against real upstreams on loopback.

Upstreams: Debian's ``docker-registry`` with htpasswd (basic auth), a second dockyard with
bearer tokens, and a hostile registry (tests/mirror_support.py) that sends wrong bytes, a
truncated body or a malformed manifest. Clients: plain HTTP, skopeo and the oras SDK.
"""

from __future__ import annotations

import random
import time

import httpx
import pytest

from tests.conftest import require_tool
from tests.mirror_support import Hostile, mirrors_env, push_two_step, start_distribution, write_htpasswd
from tests.support import (OCI_MANIFEST, free_port, image_manifest, make_config, make_layer, sha256,
                           start_server)

NO_JOBS = {"DOCKYARD_SCRUB_ENABLED": "false", "DOCKYARD_GC_ENABLED": "false"}
ACCEPT = {"Accept": OCI_MANIFEST}


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def mirrored(client: httpx.Client, name: str = "hub") -> dict:
    r = client.get("/admin/v1/mirrors")
    assert r.status_code == 200, r.text
    return {m["name"]: m for m in r.json()["mirrors"]}[name]


def stored(client: httpx.Client, images: int, name: str = "hub") -> dict:
    return wait_for(lambda: (lambda m: m if m["images"] >= images else None)(mirrored(client, name)),
                    what=f"{images} mirrored images")


@pytest.fixture(scope="module")
def distribution(tmp_path_factory):
    require_tool("docker-registry")
    root = tmp_path_factory.mktemp("distribution")
    dist = start_distribution(root, htpasswd=write_htpasswd(root / "htpasswd", {"up": "up-pw"}))
    yield dist
    dist.stop()


@pytest.fixture(scope="module")
def hostile():
    h = Hostile()
    yield h
    h.stop()


@pytest.fixture(scope="module")
def going():
    """An upstream the stale test shuts down."""
    h = Hostile()
    yield h
    h.stop()


@pytest.fixture(scope="module")
def mirror(tmp_path_factory, distribution, hostile, going):
    mirrors = {"hub": {"prefix": "hub/", "url": distribution.url, "username": "up", "password": "up-pw"},
               "bad": {"prefix": "bad/", "url": hostile.url},
               "going": {"prefix": "going/", "url": going.url},
               "dead": {"prefix": "dead/", "url": f"http://127.0.0.1:{free_port()}"}}  # nothing listens
    env = {**NO_JOBS, **mirrors_env(mirrors, mirror_manifest_ttl="1s")}
    server = start_server(tmp_path_factory.mktemp("mirror"), extra_env=env)
    yield server
    server.stop()


@pytest.fixture
def upstream(distribution):
    with httpx.Client(base_url=distribution.url, auth=("up", "up-pw"), timeout=30) as c:
        yield c


def test_pull_through_by_tag_and_digest_verified_and_stored(mirror, upstream):
    digest, manifest, blobs = push_two_step(upstream, "team/app", "v1", "pt-1", layers=2)
    with mirror.client() as c:
        r = c.get("/v2/hub/team/app/manifests/v1", headers=ACCEPT)
        assert r.status_code == 200, r.text
        assert r.content == manifest and r.headers["Docker-Content-Digest"] == digest
        assert r.headers["Dockyard-Mirror"] == "fetched"
        for b in blobs:  # streamed from the upstream (or waited for the background fetch)
            got = c.get(f"/v2/hub/team/app/blobs/{sha256(b)}")
            assert got.status_code == 200 and got.content == b
        state = stored(c, 1)
        assert state["reachable"] is True and state["bytes"] >= sum(map(len, blobs)) + len(manifest)
        # stored through the push path: a tag, pullable by digest, served from here now
        tags = c.get("/v2/hub/team/app/tags/list").json()
        assert tags["tags"] == ["v1"]
        r = c.get(f"/v2/hub/team/app/manifests/{digest}", headers=ACCEPT)
        assert r.status_code == 200 and r.content == manifest and "Dockyard-Mirror" not in r.headers
        metrics = c.get("/metrics").text
        assert 'dockyard_mirror_fetches_total{kind="manifest",upstream="hub"}' in metrics


def test_unknown_upstream_image_is_manifest_unknown(mirror):
    with mirror.client() as c:
        r = c.get("/v2/hub/team/nothing/manifests/v1", headers=ACCEPT)
        assert r.status_code == 404 and r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"


def test_pushes_to_a_mirrored_repository_are_denied(mirror):
    with mirror.client() as c:
        r = c.post("/v2/hub/team/app/blobs/uploads/")
        assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED"
        config = make_config("deny")
        r = c.put("/v2/hub/team/app/manifests/v9", content=image_manifest(config, []),
                  headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED"
        assert c.post("/v2/local/app/blobs/uploads/").status_code == 202  # elsewhere pushes work


def noise(seed: str, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _lies(hostile: Hostile, repo: str) -> dict[str, bytes]:
    """Images whose upstream lies in one way each; returns what the upstream claims."""
    out = {}
    # 1. a layer whose bytes do not match its digest (same length)
    good, config = noise("wrong-bytes", 300_000), make_config("wrong-bytes")
    m = image_manifest(config, [good])
    hostile.image(repo, "wrong-bytes", m, [config, good], OCI_MANIFEST)
    hostile.blob(repo, sha256(good), good[:-10] + b"x" * 10)
    out["wrong-bytes"] = good
    # 2. a layer whose body breaks off half way
    good2, config2 = noise("truncated", 300_000), make_config("truncated")
    m2 = image_manifest(config2, [good2])
    hostile.image(repo, "truncated", m2, [config2, good2], OCI_MANIFEST)
    hostile.blob(repo, sha256(good2), good2, cut=150_000)
    out["truncated"] = good2
    # 2b. a small layer (one chunk) with wrong bytes: verified before anything is sent
    good4, config4 = noise("small-wrong", 2_000), make_config("small-wrong")
    hostile.image(repo, "small-wrong", image_manifest(config4, [good4]), [config4, good4], OCI_MANIFEST)
    hostile.blob(repo, sha256(good4), good4[:-10] + b"x" * 10)
    out["small-wrong"] = good4
    # 3. a manifest that is not JSON; 4. a manifest that is not the one its digest names
    hostile.manifest(repo, "junk", b"{not json", OCI_MANIFEST)
    config3 = make_config("lying-manifest")
    real = image_manifest(config3, [])
    hostile.manifest(repo, sha256(real), image_manifest(make_config("other"), []), OCI_MANIFEST)
    out["manifest-digest"] = real
    return out


def test_a_lying_upstream_gets_nothing_cached(mirror, hostile):
    lies = _lies(hostile, "liar")
    with mirror.client() as c:
        for reference in ("junk", sha256(lies["manifest-digest"])):
            r = c.get(f"/v2/bad/liar/manifests/{reference}", headers=ACCEPT)
            assert r.status_code == 503, r.text
            assert r.json()["errors"][0]["code"] == "UNAVAILABLE"
        errors_before_first_byte = []
        for tag in ("wrong-bytes", "truncated", "small-wrong"):
            layer = lies[tag]
            r = c.get(f"/v2/bad/liar/manifests/{tag}", headers=ACCEPT)
            assert r.status_code == 200  # the manifest itself is true
            # the client never holds the lie: an OCI error when it shows before the first byte
            # is sent (a one-chunk blob is verified before it goes out), else the transfer breaks
            try:
                with c.stream("GET", f"/v2/bad/liar/blobs/{sha256(layer)}") as body:
                    if body.status_code != 200:
                        body.read()
                        assert body.status_code == 503, (tag, body.status_code, body.text)
                        assert body.json()["errors"][0]["code"] == "UNAVAILABLE", body.text
                        errors_before_first_byte.append(tag)
                        continue
                    received = b"".join(body.iter_bytes())
                    raise AssertionError(f"{tag}: a complete 200 body of {len(received)} bytes was served")
            except httpx.HTTPError:
                pass
        assert "small-wrong" in errors_before_first_byte  # a one-chunk lie: a clean OCI error, not a cut 200
        time.sleep(1.0)  # background completions of the true manifests fail meanwhile
        state = mirrored(c, "bad")
        assert state["images"] == 0 and state["bytes"] == 0
        assert "nothing cached" in state["last_error"] or "broke off" in state["last_error"], state
        # a HEAD (fetch first, then answer) says the same: an error, no blob
        for tag in ("wrong-bytes", "truncated"):
            r = c.head(f"/v2/bad/liar/blobs/{sha256(lies[tag])}")
            assert r.status_code == 503
        for tag in ("wrong-bytes", "truncated", "small-wrong"):  # no data under the digest either
            hexdigest = sha256(lies[tag]).split(":", 1)[1]
            assert not (mirror.data_dir / "storage" / "blobs" / "sha256" / hexdigest[:2] / hexdigest).exists()
        assert 'dockyard_mirror_failures_total{kind="blob",upstream="bad"}' in c.get("/metrics").text


def test_upstream_down_serves_stale_with_warning(mirror, going):
    config, layer = make_config("stale"), make_layer("stale", 5000)
    m = image_manifest(config, [layer])
    going.image("app", "v1", m, [config, layer], OCI_MANIFEST)
    with mirror.client() as c:
        assert c.get("/v2/going/app/manifests/v1", headers=ACCEPT).status_code == 200
        wait_for(lambda: c.get(f"/v2/going/app/manifests/{sha256(m)}", headers=ACCEPT).headers.get(
            "Dockyard-Mirror") is None, what="the image stored")
        # the upstream moves the tag: after the TTL the new image is fetched
        config2 = make_config("stale-2")
        m2 = image_manifest(config2, [layer])
        going.image("app", "v1", m2, [config2, layer], OCI_MANIFEST)
        time.sleep(1.1)
        r = c.get("/v2/going/app/manifests/v1", headers=ACCEPT)
        assert r.content == m2 and r.headers["Dockyard-Mirror"] == "fetched"
        wait_for(lambda: c.get("/v2/going/app/manifests/v1", headers=ACCEPT).headers.get("Dockyard-Mirror") is None,
                 what="the moved tag stored")
        # the upstream lies about the tag now (junk): past the TTL the cached tag is served, marked
        going.manifest("app", "v1", b"{not json", OCI_MANIFEST)
        time.sleep(1.1)
        r = c.get("/v2/going/app/manifests/v1", headers=ACCEPT)
        assert r.status_code == 200 and r.content == m2 and r.headers["Dockyard-Mirror"] == "stale"
        # the upstream goes away (its server is shut down: nothing listens any more); past the
        # TTL the cached tag is served, marked stale
        going.stop()
        time.sleep(1.1)
        r = c.get("/v2/going/app/manifests/v1", headers=ACCEPT)
        assert r.status_code == 200 and r.content == m2
        assert r.headers["Warning"] == '110 - "Response is stale"'
        assert r.headers["Dockyard-Mirror"] == "stale"
        assert mirrored(c, "going")["reachable"] is False
        assert c.get(f"/v2/going/app/blobs/{sha256(layer)}").content == layer
        # by digest nothing expires: no upstream asked, nothing stale
        r = c.get(f"/v2/going/app/manifests/{sha256(m)}", headers=ACCEPT)
        assert r.status_code == 200 and r.content == m and "Warning" not in r.headers
        # not cached and the upstream down: 503, not a 404 that says the image does not exist
        for path in ("/v2/going/other/manifests/v1", "/v2/dead/app/manifests/v1"):
            r = c.get(path, headers=ACCEPT)
            assert r.status_code == 503 and r.json()["errors"][0]["code"] == "UNAVAILABLE"
            assert "Retry-After" in r.headers


def test_skopeo_and_oras_pull_through(mirror, upstream, tmp_path, monkeypatch):
    skopeo = require_tool("skopeo")
    digest, manifest, blobs = push_two_step(upstream, "tools/skopeo", "v1", "skopeo-pull", layers=3)
    import subprocess

    out = tmp_path / "copy"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path),
           "TMPDIR": str(tmp_path), "_CONTAINERS_ROOTLESS_UID": "4242"}
    proc = subprocess.run([skopeo, "copy", "--retry-times", "0", "--src-tls-verify=false",
                           f"docker://{mirror.host}/hub/tools/skopeo:v1", f"dir:{out}"],
                          env=env, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:] + mirror.log()[-3000:]
    assert (out / "manifest.json").read_bytes() == manifest
    for b in blobs:
        assert (out / sha256(b).split(":", 1)[1]).read_bytes() == b

    import oras.provider

    class FastRegistry(oras.provider.Registry):
        do_request = oras.provider.Registry.do_request.__wrapped__

    oras_digest, _, oras_blobs = push_two_step(upstream, "tools/oras", "v1", "oras-pull", layers=1)
    reg = FastRegistry(hostname=mirror.host, insecure=True)
    got = reg.get_manifest(f"{mirror.host}/hub/tools/oras:v1")
    assert got["config"]["digest"] == sha256(oras_blobs[0])
    monkeypatch.chdir(tmp_path)
    layer = oras_blobs[1]
    r = reg.get_blob(f"{mirror.host}/hub/tools/oras:v1", sha256(layer))
    assert r.status_code == 200 and r.content == layer
