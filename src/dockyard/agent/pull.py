"""Pull one image from the registry into ``images_dir/tars/`` as an OCI archive.

Every blob and the manifest are streamed into a temporary layout and checked against their
digests; the archive is written as a temporary too and renamed into place only when all of
it is verified. A crash leaves only temporaries (``tmp/``), which the agent removes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from dockyard import faults
from dockyard.agent.client import RegistryClient
from dockyard.agent.files import DigestMismatch, ImagesDir, copy_verified, key, remove
from dockyard.agent.runtime import BYTES_ANNOTATION, REF_NAME, REPO_ANNOTATION, TAG_ANNOTATION

INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")


@dataclass
class Pulled:
    repository: str
    tag: str | None
    digest: str
    bytes: int
    tar: Path


def _verified(body: bytes, expected: str | None) -> str:
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    if expected and expected.startswith("sha512:"):
        digest = "sha512:" + hashlib.sha512(body).hexdigest()
    if expected and digest != expected:
        raise DigestMismatch(f"manifest hashes to {digest}, expected {expected}")
    return digest


def _platform(index: dict) -> dict:
    entries = [m for m in index.get("manifests") or [] if isinstance(m, dict)]
    for m in entries:
        p = m.get("platform") or {}
        if p.get("os") == "linux" and p.get("architecture") == "amd64":
            return m
    if not entries:
        raise DigestMismatch("index lists no manifest")
    return entries[0]


def fetch(client: RegistryClient, files: ImagesDir, repository: str, reference: str) -> Pulled:
    tag = None if ":" in reference else reference
    body, media_type, header_digest = client.manifest(repository, reference)
    digest = _verified(body, reference if tag is None else header_digest)
    doc = json.loads(body)
    if media_type.split(";")[0] in INDEX_TYPES or doc.get("manifests") is not None:
        child = _platform(doc)
        body, media_type, _ = client.manifest(repository, child["digest"])
        digest = _verified(body, child["digest"])
        doc = json.loads(body)
    descriptors = [doc.get("config")] + list(doc.get("layers") or [])
    layout = files.temp(".pull")
    try:
        (layout / "blobs").mkdir(parents=True)
        (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        total = len(body)
        for d in descriptors:
            if not isinstance(d, dict) or not isinstance(d.get("digest"), str):
                raise DigestMismatch("manifest descriptor without a digest")
            path = layout / "blobs" / d["digest"].replace(":", "/")
            key(d["digest"])  # a digest, not a path
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                continue
            with client.blob(repository, d["digest"]) as chunks, open(path, "wb") as out:
                total += copy_verified(chunks, out, d["digest"], d.get("size"))
            faults.point("agent.pull_blob_written")
        manifest_path = layout / "blobs" / digest.replace(":", "/")
        manifest_path.parent.mkdir(parents=True, exist_ok=True)
        manifest_path.write_bytes(body)
        name = f"{client.registry_host}/{repository}:{tag or key(digest)}"
        (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
            "mediaType": media_type.split(";")[0] or doc.get("mediaType"), "digest": digest, "size": len(body),
            "annotations": {REF_NAME: name, REPO_ANNOTATION: repository, TAG_ANNOTATION: tag or "",
                            BYTES_ANNOTATION: str(total)}}]}))
        tmp_tar = files.temp(".tar")
        with open(tmp_tar, "wb") as fh:
            with tarfile.open(fileobj=fh, mode="w") as archive:
                for item in ("oci-layout", "index.json"):
                    archive.add(layout / item, item)
                for blob in sorted((layout / "blobs").rglob("*")):
                    if blob.is_file():
                        archive.add(blob, str(blob.relative_to(layout)))
            fh.flush()
            os.fsync(fh.fileno())
        faults.point("agent.pull_tar_written")
        final = files.tar_path(digest)
        files.install(tmp_tar, final)
        return Pulled(repository, tag, digest, total, final)
    finally:
        remove(layout)
