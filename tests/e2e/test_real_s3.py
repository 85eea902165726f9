"""End-to-end on a real S3 server: ``dockyard serve`` on PostgreSQL + Ceph's RADOS Gateway 16.2.

The gateway is the session fixture ``ceph_rgw`` (``scripts/ceph-rgw``: one monitor, one memstore
OSD, the beast frontend on loopback), started once per run and shared with the storage-driver
contract suite; it is not one of conftest's BACKENDS, so the other server tests are not
multiplied by it. Every server here gets a fresh PostgreSQL database and a fresh bucket.

- real clients push and pull through the registry: the ``oras`` SDK (monolithic, chunked with
  1 MiB chunks, which the driver streams through on commit, and with 5 MiB chunks, which it
  composes server-side with UploadPartCopy) and ``skopeo`` (an OCI layout, and back);
- with ``s3_redirect`` a blob GET answers 307 to a presigned URL on the gateway, and oras
  follows it;
- a bucket is empty after collection: push, delete, cancel and abandon uploads, then scrub and
  collect with short ``scrub_time`` / ``gc_delay`` / ``upload_ttl``; the bucket lists nothing,
  the catalog is empty, and the gateway's access log shows one DELETE per blob, none twice.

Behaviour of RGW 16.2 the S3 driver must not (and does not) depend on: CompleteMultipartUpload
answers an empty ETag, CopyObject ignores ``x-amz-copy-source-if-*`` and returns its ETag
without quotes, DeleteObjects takes at most 1,000 keys.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.conftest import require_tool
from tests.e2e.images import build_image_layout, layout_ref, sha256_bytes, sha256_file, verify_oci_layout
from tests.e2e.test_oras import FastRegistry, push_disk, write_disk
from tests.e2e.test_skopeo import Skopeo
from tests.support import postgres_database, start_server

PREFIX = "registry"


@pytest.fixture(scope="module")
def rgw_bucket(ceph_rgw) -> str:
    bucket = f"e2e-{uuid.uuid4().hex[:10]}"
    ceph_rgw.make_bucket(bucket)
    return bucket


@pytest.fixture(scope="module")
def rgw_database():
    with postgres_database() as url:
        yield url


@pytest.fixture(scope="module")
def rgw_server(ceph_rgw, rgw_bucket, rgw_database, tmp_path_factory):
    """``dockyard serve`` on PostgreSQL + the gateway (blob bytes stream through the registry)."""
    proc = start_server(tmp_path_factory.mktemp("rgw-server"), database_url=rgw_database,
                        extra_env=ceph_rgw.env(rgw_bucket, prefix=PREFIX))
    yield proc
    proc.stop()


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)  # oras' push() only takes files under the current directory
    return tmp_path


def blob_key(digest: str) -> str:
    hexd = digest.split(":", 1)[1]
    return f"{PREFIX}/blobs/sha256/{hexd[:2]}/{hexd}"


@pytest.mark.parametrize("mode,size,chunk", [
    ("monolithic", 3 * 1024 * 1024 + 17, None),
    ("chunked-1MiB", 3 * 1024 * 1024 + 17, 1024 * 1024),          # small parts: streamed through on commit
    ("chunked-5MiB", 11 * 1024 * 1024 + 5, 5 * 1024 * 1024),      # parts >= 5 MiB: UploadPartCopy on commit
])
def test_oras_push_and_pull(ceph_rgw, rgw_server, rgw_bucket, workdir, repo, mode, size, chunk):
    disk = write_disk(workdir / "disk.qcow2", size)
    want = sha256_bytes(disk)
    registry = FastRegistry(hostname=rgw_server.host, insecure=True)
    target = f"{rgw_server.host}/{repo}:v1"
    r = push_disk(registry, target, do_chunked=chunk is not None, chunk_size=chunk)
    assert r.status_code == 201, (r.status_code, r.text, rgw_server.log()[-3000:])
    manifest_digest = r.headers["Docker-Content-Digest"]

    # the blob is one object in the bucket, of the right size, with the right bytes
    head = ceph_rgw.client().head_object(Bucket=rgw_bucket, Key=blob_key(want))
    assert head["ContentLength"] == size
    body = ceph_rgw.client().get_object(Bucket=rgw_bucket, Key=blob_key(want))["Body"].read()
    assert sha256_bytes(body) == want

    files = registry.pull(target=target, outdir=str(workdir / "out"))
    assert [Path(f).name for f in files] == ["disk.qcow2"]
    assert sha256_file(Path(files[0])) == want
    files = registry.pull(target=f"{rgw_server.host}/{repo}@{manifest_digest}", outdir=str(workdir / "by-digest"))
    assert Path(files[0]).read_bytes() == disk

    # ranged reads through the registry are served from the object's byte ranges
    with rgw_server.client() as c:
        part = c.get(f"/v2/{repo}/blobs/{want}", headers={"Range": f"bytes={size - 100}-{size - 1}"})
    assert part.status_code == 206 and part.content == disk[-100:]


def test_skopeo_round_trip(ceph_rgw, rgw_server, rgw_bucket, tmp_path, repo):
    skopeo = Skopeo(require_tool("skopeo"), tmp_path / "skopeo-home", rgw_server)
    src = build_image_layout(tmp_path / "src", "v1", repo, layer_sizes=(100, 300 * 1024, 6 * 1024 * 1024))
    image = src.images[0]
    skopeo.push(f"oci:{src.root}:v1", repo, "v1")
    for desc in [image.config, *image.layers]:
        head = ceph_rgw.client().head_object(Bucket=rgw_bucket, Key=blob_key(desc["digest"]))
        assert head["ContentLength"] == desc["size"]

    skopeo.pull(repo, "v1", f"oci:{tmp_path / 'back'}:v1")
    got = verify_oci_layout(tmp_path / "back")
    assert got == image.all_digests == verify_oci_layout(src.root)
    assert layout_ref(tmp_path / "back", "v1")["digest"] == image.digest
    assert skopeo.list_tags(repo) == ["v1"]


def test_blob_redirect_to_the_gateway(ceph_rgw, rgw_server, rgw_bucket, rgw_database, workdir, tmp_path, repo):
    """A replica with ``s3_redirect`` on the same database and bucket: blob GETs answer 307 to a
    presigned URL of the gateway, which serves the bytes; oras follows the redirect."""
    disk = write_disk(workdir / "disk.qcow2", 1024 * 1024 + 3)
    registry = FastRegistry(hostname=rgw_server.host, insecure=True)
    r = push_disk(registry, f"{rgw_server.host}/{repo}:v1")
    assert r.status_code == 201, r.text
    redirecting = start_server(tmp_path / "redirect", database_url=rgw_database,
                               extra_env={**ceph_rgw.env(rgw_bucket, prefix=PREFIX), "DOCKYARD_S3_REDIRECT": "true"})
    try:
        digest = sha256_bytes(disk)
        with redirecting.client() as c:
            r = c.get(f"/v2/{repo}/blobs/{digest}")
        assert r.status_code == 307, r.text
        location = r.headers["Location"]
        assert location.startswith(ceph_rgw.url + "/"), location
        assert httpx.get(location).content == disk
        files = FastRegistry(hostname=redirecting.host, insecure=True).pull(
            target=f"{redirecting.host}/{repo}:v1", outdir=str(workdir / "out"))
        assert Path(files[0]).read_bytes() == disk
    finally:
        redirecting.stop()


# ---- nothing left behind -------------------------------------------------------------------

GC_DELAY, SCRUB_TIME, UPLOAD_TTL = 2.0, 1.0, 3.0


def settle(client: httpx.Client, timeout: float = 60.0) -> list[dict]:
    """POST /admin/v1/scrub and /admin/v1/gc until two rounds in a row reclaim nothing and no queue
    entry or tombstone is pending."""
    rounds, quiet = [], 0
    deadline = time.monotonic() + timeout
    while quiet < 2:
        assert time.monotonic() < deadline, f"did not settle: {rounds[-3:]}"
        reclaimed = Counter()
        for job in ("scrub", "gc"):
            r = client.post(f"/admin/v1/{job}")
            assert r.status_code == 200, r.text
            for kind, v in r.json()["kinds"].items():
                assert not v["failures"], (job, kind, v)
                reclaimed[kind] += v["objects"]
        backlog = client.get("/admin/v1/gc").json()["backlog"]
        pending = {q: v["pending"] for q, v in backlog.items() if v["pending"]}
        rounds.append({"reclaimed": {k: v for k, v in reclaimed.items() if v}, "pending": pending})
        quiet = quiet + 1 if not sum(reclaimed.values()) and not pending else 0
        time.sleep(0.2)
    return rounds


def test_bucket_is_empty_after_collection(ceph_rgw, workdir, tmp_path):
    """Push (oras, monolithic and chunked; skopeo), cancel an upload, abandon another, delete every
    image; after scrub_time, gc_delay and upload_ttl the collector leaves the bucket empty."""
    bucket = f"gc-{uuid.uuid4().hex[:10]}"
    ceph_rgw.make_bucket(bucket)
    env = {**ceph_rgw.env(bucket, prefix=PREFIX), "DOCKYARD_GC_ENABLED": "false", "DOCKYARD_SCRUB_ENABLED": "false",
           "DOCKYARD_GC_DELAY": f"{GC_DELAY}s", "DOCKYARD_SCRUB_TIME": f"{SCRUB_TIME}s",
           "DOCKYARD_UPLOAD_TTL": f"{UPLOAD_TTL}s"}
    with postgres_database() as url:
        server = start_server(tmp_path / "server", database_url=url, extra_env=env)
        try:
            registry = FastRegistry(hostname=server.host, insecure=True)
            pushed: dict[str, str] = {}  # repo -> manifest digest
            blobs: set[str] = set()  # every blob digest pushed
            for n, (chunked, size) in enumerate([(False, 2 * 1024 * 1024), (True, 11 * 1024 * 1024 + 5)]):
                blobs.add(sha256_bytes(write_disk(workdir / "disk.qcow2", size)))
                r = push_disk(registry, f"{server.host}/gc/oras{n}:v1", do_chunked=chunked, chunk_size=5 * 1024 * 1024)
                assert r.status_code == 201, r.text
                blobs.add(sha256_file(workdir / "vm-config.json"))  # the same config in both images
                pushed[f"gc/oras{n}"] = r.headers["Docker-Content-Digest"]
            skopeo = Skopeo(require_tool("skopeo"), tmp_path / "skopeo-home", server)
            src = build_image_layout(tmp_path / "src", "v1", "gc-skopeo", layer_sizes=(100, 64 * 1024))
            skopeo.push(f"oci:{src.root}:v1", "gc/skopeo", "v1")
            pushed["gc/skopeo"] = src.images[0].digest
            blobs |= {d["digest"] for d in [src.images[0].config, *src.images[0].layers]}

            with server.client() as c:
                for state in ("cancelled", "abandoned"):
                    r = c.post("/v2/gc/uploads/blobs/uploads/")
                    assert r.status_code == 202, r.text
                    location = r.headers["Location"]
                    r = c.patch(location, content=state.encode() * 1000,
                                headers={"Content-Type": "application/octet-stream"})
                    assert r.status_code == 202, r.text
                    if state == "cancelled":
                        assert c.delete(r.headers["Location"]).status_code == 204
                stored = ceph_rgw.keys(bucket)
                assert {k for k in stored if "/blobs/" in k} == {blob_key(d) for d in blobs}, stored
                assert any(k.startswith(f"{PREFIX}/uploads/") for k in stored), stored

                for name, digest in pushed.items():
                    r = c.delete(f"/v2/{name}/manifests/{digest}")
                    assert r.status_code == 202, r.text
                time.sleep(max(GC_DELAY, SCRUB_TIME, UPLOAD_TTL) + 0.5)
                rounds = settle(c)
                assert ceph_rgw.keys(bucket) == [], (rounds, ceph_rgw.keys(bucket))
                assert c.get("/v2/_catalog").json()["repositories"] == []
        finally:
            server.stop()
        assert "Traceback" not in server.log(), server.log()[-4000:]

    # every blob was deleted by the collector exactly once: it logs each key it deleted (the
    # gateway's access log shows the DeleteObjects batches, not their keys), and the bucket is empty
    counts = Counter(re.findall(r"gc: deleted blob sha256:([0-9a-f]{64})", server.log()))
    assert {d.split(":", 1)[1] for d in blobs} == set(counts), counts
    assert set(counts.values()) == {1}, counts
