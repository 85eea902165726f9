"""End-to-end: the real ``skopeo`` binary against a real ``dockyard serve`` (SQLite and PostgreSQL).

Every skopeo run gets its own HOME / XDG dirs, and ``_CONTAINERS_ROOTLESS_UID`` makes
containers/image treat the caller as unprivileged, so its persistent blob-info cache lives in
``$XDG_DATA_HOME/containers/cache`` under the test's tmp dir instead of the machine-wide
``/var/lib/containers/cache`` (checked with ``skopeo --debug``: "Using blob info cache at ...").
A cache shared with earlier runs could make skopeo HEAD or mount from repositories that do not
exist on this server; with a private cache, a mount is attempted exactly when this test pushed
the blob to another repository first, which the cross-repository test relies on.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import require_tool
from tests.e2e.images import (OCI_INDEX, OCI_MANIFEST, assert_same_blobs, build_image_layout,
                              build_multiarch_layout, layout_ref, read_blob, sha256_bytes, verify_dir_copy,
                              verify_oci_layout)

MANIFEST_ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX, "application/vnd.docker.distribution.manifest.v2+json",
                             "application/vnd.docker.distribution.manifest.list.v2+json"])


class Skopeo:
    """Runs skopeo with an isolated configuration and blob-info cache, against one server."""

    def __init__(self, binary: str, home: Path, server):
        self.binary = binary
        self.server = server
        self.host = server.host
        self.home = home
        for sub in ("data", "config", "run", "cache"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        (home / "run").chmod(0o700)
        self.env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(home),
            "XDG_DATA_HOME": str(home / "data"),
            "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_RUNTIME_DIR": str(home / "run"),
            "XDG_CACHE_HOME": str(home / "cache"),
            # not root as far as containers/image is concerned -> per-user blob-info cache
            "_CONTAINERS_ROOTLESS_UID": "4242",
            "TMPDIR": str(home),
        }

    @property
    def cache_file(self) -> Path:
        return self.home / "data" / "containers" / "cache" / "blob-info-cache-v1.boltdb"

    def ref(self, name: str, reference: str = "") -> str:
        if not reference:
            return f"docker://{self.host}/{name}"
        sep = "@" if reference.startswith("sha256:") else ":"
        return f"docker://{self.host}/{name}{sep}{reference}"

    def run(self, *args: str, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
        cmd = [self.binary, *args]
        proc = subprocess.run(cmd, env=self.env, cwd=cwd, capture_output=True, timeout=120)
        if check and proc.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n--- stderr ---\n"
                        f"{proc.stderr.decode(errors='replace')[-6000:]}\n"
                        f"--- server log tail ({self.server.log_path}) ---\n{self.server.log()[-4000:]}")
        return proc

    def push(self, src: str, name: str, tag: str, *extra: str) -> subprocess.CompletedProcess:
        return self.run("copy", "--retry-times", "0", "--dest-tls-verify=false", *extra, src, self.ref(name, tag))

    def pull(self, name: str, reference: str, dest: str, *extra: str) -> subprocess.CompletedProcess:
        return self.run("copy", "--retry-times", "0", "--src-tls-verify=false", *extra,
                        self.ref(name, reference), dest)

    def inspect_raw(self, name: str, reference: str, *extra: str) -> bytes:
        return self.run("inspect", "--raw", "--tls-verify=false", *extra, self.ref(name, reference)).stdout

    def list_tags(self, name: str) -> list[str]:
        out = json.loads(self.run("list-tags", "--tls-verify=false", self.ref(name)).stdout)
        assert out["Repository"] == f"{self.host}/{name}"
        return sorted(out["Tags"] or [])


@pytest.fixture
def skopeo(server, tmp_path) -> Skopeo:
    return Skopeo(require_tool("skopeo"), tmp_path / "skopeo-home", server)


def _get_manifest(client: httpx.Client, name: str, reference: str) -> httpx.Response:
    return client.get(f"/v2/{name}/manifests/{reference}", headers={"Accept": MANIFEST_ACCEPT})


def test_skopeo_uses_private_blob_info_cache(skopeo, tmp_path, repo):
    """Guard for the isolation the other tests rely on."""
    src = build_image_layout(tmp_path / "src", "v1", repo, layer_sizes=(100,))
    out = skopeo.push(f"oci:{src.root}:v1", repo, "v1", "--debug")
    assert f"Using blob info cache at {skopeo.cache_file}" in out.stderr.decode()
    assert skopeo.cache_file.exists()


def test_multilayer_image_round_trip_oci_and_dir(skopeo, client, tmp_path, repo):
    src = build_image_layout(tmp_path / "src", "v1", repo)
    image = src.images[0]
    assert len(image.layers) == 3

    skopeo.push(f"oci:{src.root}:v1", repo, "v1")

    # The registry serves exactly the pushed bytes, under their digests.
    r = _get_manifest(client, repo, "v1")
    assert r.status_code == 200, r.text
    assert r.content == image.manifest_bytes
    assert r.headers["Docker-Content-Digest"] == image.digest
    assert r.headers["Content-Type"] == OCI_MANIFEST
    for desc in [image.config, *image.layers]:
        b = client.get(f"/v2/{repo}/blobs/{desc['digest']}")
        assert b.status_code == 200, (desc, b.text)
        assert sha256_bytes(b.content) == desc["digest"] and len(b.content) == desc["size"]

    # registry -> oci: layout; byte-identical round trip, no conversion
    skopeo.pull(repo, "v1", f"oci:{tmp_path / 'back-oci'}:v1")
    back = tmp_path / "back-oci"
    got = verify_oci_layout(back)
    assert got == image.all_digests == verify_oci_layout(src.root)
    assert_same_blobs(src.root, back, got)
    assert layout_ref(back, "v1")["digest"] == image.digest

    # registry -> dir:
    skopeo.pull(repo, "v1", f"dir:{tmp_path / 'back-dir'}")
    copy = verify_dir_copy(tmp_path / "back-dir")
    assert copy.manifest_digest == image.digest
    assert copy.manifest_bytes == image.manifest_bytes
    assert copy.blobs == image.blob_digests
    assert copy.child_manifests == set()
    for digest in copy.blobs:
        assert (tmp_path / "back-dir" / digest.split(":", 1)[1]).read_bytes() == read_blob(src.root, digest)

    # pulling by digest gives the same image
    skopeo.pull(repo, image.digest, f"dir:{tmp_path / 'by-digest'}")
    assert verify_dir_copy(tmp_path / "by-digest").manifest_digest == image.digest


def test_inspect_raw_config_and_list_tags(skopeo, client, tmp_path, repo):
    src = build_image_layout(tmp_path / "src", "v1", repo, layer_sizes=(500, 3000))
    image = src.images[0]
    skopeo.push(f"oci:{src.root}:v1", repo, "v1")
    skopeo.push(f"oci:{src.root}:v1", repo, "v1.0")
    skopeo.push(f"oci:{src.root}:v1", repo, "latest")

    assert skopeo.inspect_raw(repo, "v1") == image.manifest_bytes
    assert skopeo.inspect_raw(repo, image.digest) == image.manifest_bytes
    assert skopeo.inspect_raw(repo, "v1", "--config") == read_blob(src.root, image.config["digest"])

    summary = json.loads(skopeo.run("inspect", "--tls-verify=false", skopeo.ref(repo, "latest")).stdout)
    assert summary["Digest"] == image.digest
    assert summary["Layers"] == [layer["digest"] for layer in image.layers]
    assert summary["Architecture"] == "amd64" and summary["Os"] == "linux"
    assert sorted(summary["RepoTags"]) == ["latest", "v1", "v1.0"]

    assert skopeo.list_tags(repo) == ["latest", "v1", "v1.0"]
    r = client.get(f"/v2/{repo}/tags/list")
    assert r.status_code == 200
    assert sorted(r.json()["tags"]) == ["latest", "v1", "v1.0"]

    # an unknown tag is a clean failure, not a hang or a crash
    proc = skopeo.run("inspect", "--raw", "--tls-verify=false", skopeo.ref(repo, "nope"), check=False)
    assert proc.returncode != 0
    assert b"manifest unknown" in proc.stderr.lower() or b"not found" in proc.stderr.lower(), proc.stderr


def test_copy_all_multiarch_index_round_trip(skopeo, client, tmp_path, repo):
    src = build_multiarch_layout(tmp_path / "src", "multi", repo)
    assert len(src.images) == 2

    skopeo.push(f"oci:{src.root}:multi", repo, "multi", "--all")

    # index by tag, each child by digest, exact bytes and media types
    r = _get_manifest(client, repo, "multi")
    assert r.status_code == 200, r.text
    assert r.content == src.index_bytes
    assert r.headers["Content-Type"] == OCI_INDEX
    assert r.headers["Docker-Content-Digest"] == src.index["digest"]
    for image in src.images:
        c = _get_manifest(client, repo, image.digest)
        assert c.status_code == 200, c.text
        assert c.content == image.manifest_bytes
        assert c.headers["Content-Type"] == OCI_MANIFEST
        assert skopeo.inspect_raw(repo, image.digest) == image.manifest_bytes
    assert skopeo.inspect_raw(repo, "multi") == src.index_bytes

    # registry -> oci: with --all; byte-identical, every blob of both platforms present
    back = tmp_path / "back-oci"
    skopeo.pull(repo, "multi", f"oci:{back}:multi", "--all")
    got = verify_oci_layout(back)
    assert got == src.digests == verify_oci_layout(src.root)
    assert_same_blobs(src.root, back, got)
    assert layout_ref(back, "multi")["digest"] == src.index["digest"]

    # registry -> dir: with --all: the index plus <hex>.manifest.json per child
    skopeo.pull(repo, "multi", f"dir:{tmp_path / 'back-dir'}", "--all")
    copy = verify_dir_copy(tmp_path / "back-dir")
    assert copy.manifest_digest == src.index["digest"]
    assert copy.child_manifests == {image.digest for image in src.images}
    assert copy.blobs == set().union(*(image.blob_digests for image in src.images))

    # without --all skopeo picks one platform out of the index
    skopeo.pull(repo, "multi", f"dir:{tmp_path / 'arm64'}", "--override-arch", "arm64")
    arm = verify_dir_copy(tmp_path / "arm64")
    arm_image = next(i for i in src.images if i.platform["architecture"] == "arm64")
    assert arm.manifest_digest == arm_image.digest
    assert arm.blobs == arm_image.blob_digests


def test_delete_by_tag(skopeo, client, tmp_path, repo):
    src = build_image_layout(tmp_path / "src", "v1", repo, layer_sizes=(400, 4000))
    other = build_image_layout(tmp_path / "other", "keep", repo + "-other", layer_sizes=(400,))
    image = src.images[0]
    skopeo.push(f"oci:{src.root}:v1", repo, "v1")
    skopeo.push(f"oci:{src.root}:v1", repo, "alias")  # same manifest, second tag
    skopeo.push(f"oci:{other.root}:keep", repo, "keep")
    assert skopeo.list_tags(repo) == ["alias", "keep", "v1"]

    # skopeo resolves the tag to a digest and deletes the manifest by digest
    skopeo.run("delete", "--tls-verify=false", skopeo.ref(repo, "v1"))

    for reference in ("v1", "alias", image.digest):
        r = _get_manifest(client, repo, reference)
        assert r.status_code == 404, (reference, r.status_code, r.text)
        assert r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN", r.text
        h = client.head(f"/v2/{repo}/manifests/{reference}", headers={"Accept": MANIFEST_ACCEPT})
        assert h.status_code == 404, (reference, h.status_code)

    r = client.get(f"/v2/{repo}/tags/list")
    assert r.status_code == 200, r.text
    assert sorted(r.json()["tags"] or []) == ["keep"]
    assert skopeo.list_tags(repo) == ["keep"]

    # the untouched image is still fully there
    assert skopeo.inspect_raw(repo, "keep") == other.images[0].manifest_bytes
    proc = skopeo.run("inspect", "--raw", "--tls-verify=false", skopeo.ref(repo, "v1"), check=False)
    assert proc.returncode != 0

    # deleting again fails cleanly
    proc = skopeo.run("delete", "--tls-verify=false", skopeo.ref(repo, image.digest), check=False)
    assert proc.returncode != 0


def test_same_layers_into_second_repository_mounts_and_pulls_back(skopeo, client, tmp_path, repo):
    src = build_image_layout(tmp_path / "src", "v1", repo)
    image = src.images[0]
    first, second = f"{repo}/first", f"{repo}/second"

    skopeo.push(f"oci:{src.root}:v1", first, "v1")
    # The private blob-info cache now knows the layers live in `first`, so skopeo HEADs them there
    # and asks for a cross-repository mount: POST /v2/<second>/blobs/uploads/?from=<first>&mount=<d>.
    out = skopeo.push(f"oci:{src.root}:v1", second, "v1", "--debug").stderr.decode()
    assert "Trying to mount" in out, out[-4000:]
    mounted = out.count("... mount OK")
    assert mounted == len(image.layers), (
        f"expected {len(image.layers)} successful mounts, got {mounted}; skopeo debug tail:\n{out[-4000:]}")

    # Both repositories serve the complete image; the second one without having had the bytes uploaded.
    for name in (first, second):
        for desc in [image.config, *image.layers]:
            h = client.head(f"/v2/{name}/blobs/{desc['digest']}")
            assert h.status_code == 200, (name, desc["digest"], h.status_code)
            assert h.headers["Content-Length"] == str(desc["size"])
        back = tmp_path / f"back-{name.rsplit('/', 1)[1]}"
        skopeo.pull(name, "v1", f"oci:{back}:v1")
        got = verify_oci_layout(back)
        assert got == image.all_digests
        assert_same_blobs(src.root, back, got)
        assert layout_ref(back, "v1")["digest"] == image.digest

    # Deleting the image from the first repository must not break the mounted copy.
    skopeo.run("delete", "--tls-verify=false", skopeo.ref(first, "v1"))
    assert _get_manifest(client, first, "v1").status_code == 404
    back = tmp_path / "back-after-delete"
    skopeo.pull(second, "v1", f"dir:{back}")
    copy = verify_dir_copy(back)
    assert copy.manifest_digest == image.digest and copy.blobs == image.blob_digests
