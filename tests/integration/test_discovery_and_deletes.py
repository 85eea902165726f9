"""Content discovery (tags, catalog, referrers) and content management (deletes)."""

import json

from tests.support import (OCI_INDEX, OCI_MANIFEST, descriptor, image_manifest, make_config, make_layer,
                           push_blob, push_image, sha256)

EMPTY = b"{}"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"


def test_tags_list_pagination(client, repo):
    digest, _, _ = push_image(client, repo, "t0", "tags")
    manifest = client.get(f"/v2/{repo}/manifests/t0").content
    names = ["a", "b", "c", "d", "e"]
    for t in names:
        assert client.put(f"/v2/{repo}/manifests/{t}", content=manifest,
                          headers={"Content-Type": OCI_MANIFEST}).status_code == 201
    all_tags = client.get(f"/v2/{repo}/tags/list").json()
    assert all_tags == {"name": repo, "tags": sorted(names + ["t0"])}
    r = client.get(f"/v2/{repo}/tags/list", params={"n": 2})
    assert r.json()["tags"] == ["a", "b"]
    assert r.headers["Link"] == f'</v2/{repo}/tags/list?n=2&last=b>; rel="next"'
    r = client.get(f"/v2/{repo}/tags/list", params={"n": 2, "last": "b"})
    assert r.json()["tags"] == ["c", "d"]
    r = client.get(f"/v2/{repo}/tags/list", params={"n": 10, "last": "d"})
    assert r.json()["tags"] == ["e", "t0"] and "Link" not in r.headers
    r = client.get(f"/v2/{repo}/tags/list", params={"n": 0})
    assert r.json()["tags"] == [] and "Link" not in r.headers
    r = client.get(f"/v2/{repo}/tags/list", params={"n": "x"})
    assert r.status_code == 400


def test_tags_list_of_unknown_and_empty_repository(client, repo):
    r = client.get(f"/v2/{repo}/tags/list")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "NAME_UNKNOWN"
    push_blob(client, repo, b"only a blob")
    r = client.get(f"/v2/{repo}/tags/list")
    assert r.status_code == 200 and r.json()["tags"] == []


def test_catalog_pagination(client, repo):
    for suffix in ("x1", "x2", "x3"):
        push_blob(client, f"{repo}/{suffix}", b"cat")
    names = client.get("/v2/_catalog").json()["repositories"]
    mine = [n for n in names if n.startswith(repo + "/")]
    assert mine == [f"{repo}/x1", f"{repo}/x2", f"{repo}/x3"]
    r = client.get("/v2/_catalog", params={"n": 1, "last": f"{repo}/x1"})
    assert r.json()["repositories"] == [f"{repo}/x2"]
    assert "rel=\"next\"" in r.headers["Link"]


def _artifact(client, repo, subject_manifest: bytes, artifact_type: str, seed: str, annotation: str) -> str:
    push_blob(client, repo, EMPTY)
    layer = f"artifact {seed}".encode()
    push_blob(client, repo, layer)
    body = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
        "config": descriptor(EMPTY_TYPE, EMPTY), "layers": [descriptor("text/plain", layer)],
        "subject": descriptor(OCI_MANIFEST, subject_manifest),
        "annotations": {"org.example.seed": annotation},
    }).encode()
    r = client.put(f"/v2/{repo}/manifests/{sha256(body)}", content=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text
    assert r.headers["OCI-Subject"] == sha256(subject_manifest)
    return sha256(body)


def test_referrers(client, repo):
    subject_digest, subject, _ = push_image(client, repo, "v1", "subject")
    r = client.get(f"/v2/{repo}/referrers/{subject_digest}")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == OCI_INDEX
    assert r.json() == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    sig = _artifact(client, repo, subject, "application/vnd.example.signature", "s", "one")
    sbom = _artifact(client, repo, subject, "application/vnd.example.sbom", "b", "two")
    got = client.get(f"/v2/{repo}/referrers/{subject_digest}").json()["manifests"]
    assert {m["digest"] for m in got} == {sig, sbom}
    for m in got:
        assert m["mediaType"] == OCI_MANIFEST and m["size"] > 0 and len(m["annotations"]) == 1
    r = client.get(f"/v2/{repo}/referrers/{subject_digest}", params={"artifactType": "application/vnd.example.sbom"})
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    assert [m["digest"] for m in r.json()["manifests"]] == [sbom]
    assert r.json()["manifests"][0]["artifactType"] == "application/vnd.example.sbom"
    # a deleted referrer leaves the list at once
    assert client.delete(f"/v2/{repo}/manifests/{sig}").status_code == 202
    got = client.get(f"/v2/{repo}/referrers/{subject_digest}").json()["manifests"]
    assert [m["digest"] for m in got] == [sbom]
    assert client.get(f"/v2/{repo}/referrers/sha256:bad").status_code == 400


def test_referrer_pushed_before_its_subject(client, repo):
    config, layer = make_config("later"), make_layer("later")
    subject = image_manifest(config, [layer])
    sig = _artifact(client, repo, subject, "application/vnd.example.signature", "early", "x")
    got = client.get(f"/v2/{repo}/referrers/{sha256(subject)}").json()["manifests"]
    assert [m["digest"] for m in got] == [sig]


def test_delete_tag_keeps_manifest_by_digest(client, repo):
    digest, manifest, _ = push_image(client, repo, "keep", "deltag")
    client.put(f"/v2/{repo}/manifests/other", content=manifest, headers={"Content-Type": OCI_MANIFEST})
    assert client.delete(f"/v2/{repo}/manifests/keep").status_code == 202
    assert client.get(f"/v2/{repo}/manifests/keep").status_code == 404
    assert client.get(f"/v2/{repo}/manifests/{digest}").status_code == 200
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["other"]
    assert client.delete(f"/v2/{repo}/manifests/keep").status_code == 404


def test_delete_manifest_hides_it_and_its_tags(client, repo):
    digest, manifest, blobs = push_image(client, repo, "gone", "delman")
    assert client.delete(f"/v2/{repo}/manifests/{digest}").status_code == 202
    for ref in ("gone", digest):
        assert client.get(f"/v2/{repo}/manifests/{ref}").status_code == 404
        assert client.head(f"/v2/{repo}/manifests/{ref}").status_code == 404
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == []
    assert client.delete(f"/v2/{repo}/manifests/{digest}").status_code == 404
    # data is not deleted inside the request: the layers are still linked and readable
    for b in blobs:
        assert client.get(f"/v2/{repo}/blobs/{sha256(b)}").content == b
    # pushing it again brings it back
    r = client.put(f"/v2/{repo}/manifests/again", content=manifest, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201
    assert client.get(f"/v2/{repo}/manifests/{digest}").status_code == 200


def test_delete_blob_unlinks_it(client, repo):
    digest = push_blob(client, repo, b"unlink me")
    assert client.delete(f"/v2/{repo}/blobs/{digest}").status_code == 202
    assert client.head(f"/v2/{repo}/blobs/{digest}").status_code == 404
    r = client.delete(f"/v2/{repo}/blobs/{digest}")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "BLOB_UNKNOWN"


def test_delete_repository(client, repo):
    digest, _, blobs = push_image(client, repo, "v1", "repo-del")
    r = client.delete(f"/admin/v1/repositories/{repo}")
    assert r.status_code == 202
    assert r.json() == {"name": repo, "manifests": 1, "tags": 1, "hosts_holding": []}
    assert repo not in client.get("/v2/_catalog").json()["repositories"]
    assert client.get(f"/v2/{repo}/tags/list").status_code == 404
    assert client.get(f"/v2/{repo}/manifests/{digest}").status_code == 404
    assert client.head(f"/v2/{repo}/blobs/{sha256(blobs[0])}").status_code == 404
    assert client.delete(f"/admin/v1/repositories/{repo}").status_code == 404
    # the name can be pushed to again
    push_image(client, repo, "v2", "repo-del-2")
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["v2"]
