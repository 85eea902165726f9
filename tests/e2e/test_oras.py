"""End-to-end: the oras Python SDK (oras-py) against a real ``dockyard serve`` (SQLite and PostgreSQL).

oras-py wraps every request in ``@retry(attempts=5)`` with sleeps of 3..83 s on any exception or
HTTP 500; ``FastRegistry`` unwraps it so a misbehaving registry fails the test at once.
``push()`` only accepts files under the current directory, hence ``monkeypatch.chdir(tmp_path)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import oras.defaults
import oras.oci
import oras.provider
import pytest

from tests.e2e.images import OCI_INDEX, OCI_MANIFEST, sha256_bytes, sha256_file

MT_QCOW2 = "application/vnd.dockyard.disk.qcow2"
MT_VM_CONFIG = "application/vnd.dockyard.vm.config.v1+json"
MT_EMPTY = "application/vnd.oci.empty.v1+json"
ARTIFACT_SIGNATURE = "application/vnd.dockyard.signature.v1"
ARTIFACT_SBOM = "application/vnd.dockyard.sbom.v1+json"
TITLE = oras.defaults.annotation_title
DISK_SIZE = 3 * 1024 * 1024 + 17  # not a multiple of any chunk size


class FastRegistry(oras.provider.Registry):
    """oras-py Registry without the multi-minute retry/back-off around every request."""

    do_request = oras.provider.Registry.do_request.__wrapped__


@pytest.fixture
def registry(server) -> FastRegistry:
    return FastRegistry(hostname=server.host, insecure=True)


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_disk(path: Path, size: int = DISK_SIZE) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def push_disk(registry: FastRegistry, target: str, *, do_chunked: bool = False, chunk_size: int | None = None):
    """Push ./disk.qcow2 with a VM config and manifest annotations via oras' high-level push()."""
    Path("vm-config.json").write_text(json.dumps({"cpus": 2, "memoryMiB": 2048, "firmware": "uefi"}))
    kwargs = {"chunk_size": chunk_size} if chunk_size else {}
    return registry.push(
        target=target,
        files=[f"disk.qcow2:{MT_QCOW2}"],
        manifest_config=f"vm-config.json:{MT_VM_CONFIG}",
        manifest_annotations={"org.opencontainers.image.description": "dockyard e2e VM disk",
                              "com.example.vm.os": "debian-12"},
        do_chunked=do_chunked,
        quiet=True,
        **kwargs,
    )


@pytest.mark.parametrize("mode", ["monolithic", "chunked"])
def test_push_and_pull_vm_disk_image(server, client, registry, workdir, repo, mode):
    disk = write_disk(workdir / "disk.qcow2")
    want = sha256_bytes(disk)
    target = f"{server.host}/{repo}:v1"

    # chunked: POST, then 1 MiB PATCHes with Content-Range "start-end", then PUT ?digest=
    r = push_disk(registry, target, do_chunked=mode == "chunked", chunk_size=1024 * 1024)
    assert r.status_code == 201, (r.status_code, r.text)
    manifest_digest = r.headers["Docker-Content-Digest"]

    # The stored manifest is what oras built, and is served under the digest the PUT reported.
    raw = client.get(f"/v2/{repo}/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert raw.status_code == 200, raw.text
    assert sha256_bytes(raw.content) == manifest_digest == raw.headers["Docker-Content-Digest"]
    assert raw.headers["Content-Type"] == OCI_MANIFEST
    manifest = registry.get_manifest(target)
    assert manifest == raw.json()
    assert manifest["config"]["mediaType"] == MT_VM_CONFIG
    assert manifest["annotations"]["com.example.vm.os"] == "debian-12"
    [layer] = manifest["layers"]
    assert layer["mediaType"] == MT_QCOW2
    assert layer["digest"] == want and layer["size"] == len(disk)
    assert layer["annotations"][TITLE] == "disk.qcow2"

    config = client.get(f"/v2/{repo}/blobs/{manifest['config']['digest']}")
    assert config.status_code == 200
    assert json.loads(config.content) == {"cpus": 2, "memoryMiB": 2048, "firmware": "uefi"}

    blob = client.head(f"/v2/{repo}/blobs/{want}")
    assert blob.status_code == 200
    assert blob.headers["Content-Length"] == str(len(disk))
    assert blob.headers["Docker-Content-Digest"] == want

    out = workdir / "out"
    files = registry.pull(target=target, outdir=str(out))
    assert [Path(f).name for f in files] == ["disk.qcow2"]
    assert sha256_file(Path(files[0])) == want
    assert Path(files[0]).read_bytes() == disk

    # pulling by digest gives the same file
    files = registry.pull(target=f"{server.host}/{repo}@{manifest_digest}", outdir=str(workdir / "by-digest"))
    assert Path(files[0]).read_bytes() == disk


def _upload_referrer(registry: FastRegistry, target: str, artifact_type: str, subject: dict, payload: bytes,
                     payload_type: str, filename: str, annotations: dict) -> str:
    """Push a manifest with artifactType + subject via upload_blob/upload_manifest; returns its digest."""
    container = registry.get_container(target)
    Path(filename).write_bytes(payload)
    layer = oras.oci.NewLayer(filename, media_type=payload_type)
    layer["annotations"] = {TITLE: filename}
    registry._check_200_response(registry.upload_blob(filename, container, layer))
    Path("empty.json").write_bytes(b"{}")
    empty = {"mediaType": MT_EMPTY, "digest": oras.defaults.blank_config_hash, "size": 2}
    registry._check_200_response(registry.upload_blob("empty.json", container, empty))
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": empty,
        "layers": [layer],
        "subject": subject,
        "annotations": annotations,
    }
    r = registry.upload_manifest(manifest, container)
    assert r.status_code == 201, (r.status_code, r.text)
    # A registry that processes `subject` says so (OCI distribution spec 1.1).
    assert r.headers.get("OCI-Subject") == subject["digest"], dict(r.headers)
    return r.headers["Docker-Content-Digest"]


def test_artifact_with_subject_is_listed_by_referrers_api(server, client, registry, workdir, repo):
    write_disk(workdir / "disk.qcow2", 256 * 1024)
    r = push_disk(registry, f"{server.host}/{repo}:v1")
    assert r.status_code == 201, r.text
    disk_digest = r.headers["Docker-Content-Digest"]
    disk_manifest = client.get(f"/v2/{repo}/manifests/v1", headers={"Accept": OCI_MANIFEST})
    subject = {"mediaType": OCI_MANIFEST, "digest": disk_digest, "size": len(disk_manifest.content)}

    # nothing refers to it yet
    r = client.get(f"/v2/{repo}/referrers/{disk_digest}")
    assert r.status_code == 200, r.text
    assert r.json()["manifests"] == []

    sig_digest = _upload_referrer(registry, f"{server.host}/{repo}:v1-sig", ARTIFACT_SIGNATURE, subject,
                                  b"not really a signature\n", "application/vnd.dockyard.signature.v1+txt",
                                  "disk.sig", {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"})
    sbom_digest = _upload_referrer(registry, f"{server.host}/{repo}:v1-sbom", ARTIFACT_SBOM, subject,
                                   json.dumps({"packages": ["qemu-guest-agent"]}).encode(),
                                   "application/vnd.dockyard.sbom.v1+json", "sbom.json", {"kind": "sbom"})

    sig = client.get(f"/v2/{repo}/manifests/{sig_digest}", headers={"Accept": OCI_MANIFEST})
    assert sig.status_code == 200 and sha256_bytes(sig.content) == sig_digest
    assert sig.json()["artifactType"] == ARTIFACT_SIGNATURE
    assert sig.json()["subject"] == subject
    sbom = client.get(f"/v2/{repo}/manifests/{sbom_digest}", headers={"Accept": OCI_MANIFEST})

    r = client.get(f"/v2/{repo}/referrers/{disk_digest}")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].split(";")[0] == OCI_INDEX
    index = r.json()
    assert index["schemaVersion"] == 2 and index["mediaType"] == OCI_INDEX
    by_digest = {m["digest"]: m for m in index["manifests"]}
    assert set(by_digest) == {sig_digest, sbom_digest}
    assert by_digest[sig_digest] == {
        "mediaType": OCI_MANIFEST, "digest": sig_digest, "size": len(sig.content),
        "artifactType": ARTIFACT_SIGNATURE,
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    }
    assert by_digest[sbom_digest]["artifactType"] == ARTIFACT_SBOM
    assert by_digest[sbom_digest]["size"] == len(sbom.content)
    assert by_digest[sbom_digest]["annotations"] == {"kind": "sbom"}

    # filtered by artifactType
    r = client.get(f"/v2/{repo}/referrers/{disk_digest}", params={"artifactType": ARTIFACT_SIGNATURE})
    assert r.status_code == 200, r.text
    assert [m["digest"] for m in r.json()["manifests"]] == [sig_digest]
    assert r.headers.get("OCI-Filters-Applied") == "artifactType"

    # the referrer itself is pullable through oras, and the subject is unaffected
    files = registry.pull(target=f"{server.host}/{repo}:v1-sig", outdir=str(workdir / "sig-out"))
    assert Path(files[0]).read_bytes() == b"not really a signature\n"
    assert registry.get_manifest(f"{server.host}/{repo}:v1")["layers"][0]["mediaType"] == MT_QCOW2


def test_list_and_delete_tags_via_oras(server, registry, workdir, repo):
    write_disk(workdir / "disk.qcow2", 64 * 1024)
    tags = ["v1", "v1.1", "stable", "2024-01-01"]
    for tag in tags:
        r = push_disk(registry, f"{server.host}/{repo}:{tag}")
        assert r.status_code == 201, r.text

    assert sorted(registry.get_tags(f"{server.host}/{repo}")) == sorted(tags)
    # N pages through the Link header when the registry paginates
    assert sorted(registry.get_tags(f"{server.host}/{repo}", N=2)) == sorted(tags)[:2]

    # delete_tag: HEAD the tag for its digest, then DELETE /manifests/<digest> (all tags share one digest)
    assert registry.delete_tag(f"{server.host}/{repo}", "stable") is True
    assert registry.get_tags(f"{server.host}/{repo}") == []
