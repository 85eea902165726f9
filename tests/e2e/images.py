"""Helpers for end-to-end tests with real clients: OCI image layouts on disk and digest checks.

An OCI image layout (what ``skopeo ... oci:DIR:TAG`` reads and writes) is:

    DIR/oci-layout            {"imageLayoutVersion": "1.0.0"}
    DIR/index.json            top-level index; the tag is the "org.opencontainers.image.ref.name"
                              annotation on a descriptor
    DIR/blobs/sha256/<hex>    every blob: layers, configs, manifests, nested indexes

A ``dir:`` copy written by skopeo is:

    DIR/manifest.json         the top manifest (or index, with --all)
    DIR/<hex>.manifest.json   child manifests of an index (only with --all)
    DIR/<hex>                 configs and layers
    DIR/version               "Directory Transport Version: ..."

Everything built here is deterministic for a given seed, and the seed is meant to be unique per
test so that no test finds its blobs already present on the (session-wide) server.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"

# Layer payload sizes for a multi-layer image: tiny, small, and one that spans many read chunks.
DEFAULT_LAYER_SIZES = (300, 64 * 1024, 1536 * 1024)

_HEX_NAME = re.compile(r"([0-9a-f]{64})(\.manifest\.json)?")


def sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _canonical(doc: dict) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


@dataclass
class Image:
    """One platform image as stored in a layout: descriptors plus the exact bytes."""

    manifest: dict  # descriptor
    config: dict  # descriptor
    layers: list[dict]  # descriptors
    manifest_bytes: bytes = b""
    platform: dict | None = None

    @property
    def digest(self) -> str:
        return self.manifest["digest"]

    @property
    def blob_digests(self) -> set[str]:
        """Config and layer digests (what a registry stores as blobs for this image)."""
        return {self.config["digest"], *(layer["digest"] for layer in self.layers)}

    @property
    def all_digests(self) -> set[str]:
        return {self.digest, *self.blob_digests}


@dataclass
class Layout:
    """An OCI image layout directory being built."""

    root: Path
    images: list[Image] = field(default_factory=list)
    index: dict | None = None  # descriptor of the top image index, for multi-arch
    index_bytes: bytes = b""

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        if not (self.root / "index.json").exists():
            (self.root / "index.json").write_text(
                json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}))

    def put(self, data: bytes, media_type: str) -> dict:
        digest = sha256_bytes(data)
        (self.root / "blobs" / "sha256" / digest.split(":", 1)[1]).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def tag(self, descriptor: dict, tag: str) -> None:
        """Record ``tag`` for ``descriptor`` in index.json (replacing an earlier use of the tag)."""
        path = self.root / "index.json"
        outer = json.loads(path.read_text())
        outer["manifests"] = [m for m in outer["manifests"] if m.get("annotations", {}).get(REF_NAME) != tag]
        outer["manifests"].append({**descriptor, "annotations": {REF_NAME: tag}})
        path.write_text(json.dumps(outer))

    @property
    def top(self) -> dict:
        """Descriptor of what the layout's tag points at: the index if multi-arch, else the image."""
        return self.index if self.index is not None else self.images[0].manifest

    @property
    def digests(self) -> set[str]:
        """Every blob digest this builder wrote (manifests and index included)."""
        out = set()
        for image in self.images:
            out |= image.all_digests
        if self.index is not None:
            out.add(self.index["digest"])
        return out


def make_tar_gz_layer(name: str, payload: bytes) -> tuple[bytes, str]:
    """A gzip'd tar holding one file; returns (compressed bytes, diff_id of the uncompressed tar)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(payload)
        info.mtime = 0
        info.mode = 0o644
        info.uid = info.gid = 0
        tar.addfile(info, io.BytesIO(payload))
    tar_bytes = raw.getvalue()
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0) as g:
        g.write(tar_bytes)
    return gz.getvalue(), sha256_bytes(tar_bytes)


def add_image(layout: Layout, seed: str, *, arch: str = "amd64",
              layer_sizes: tuple[int, ...] = DEFAULT_LAYER_SIZES) -> Image:
    """Write config, layers and manifest of one linux/<arch> image into ``layout`` (no tag)."""
    rng = random.Random(f"{seed}/{arch}")
    layers, diff_ids = [], []
    for i, size in enumerate(layer_sizes):
        # random bytes do not compress, so the layer blob really is about ``size`` bytes
        gz, diff_id = make_tar_gz_layer(f"layer{i}-{arch}.bin", rng.randbytes(size))
        layers.append(layout.put(gz, OCI_LAYER_GZIP))
        diff_ids.append(diff_id)
    config = {
        "created": "2024-01-01T00:00:00Z",
        "architecture": arch,
        "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"], "Labels": {"seed": seed}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": f"layer {i}"} for i in range(len(layers))],
    }
    config_desc = layout.put(_canonical(config), OCI_CONFIG)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_desc, "layers": layers,
                "annotations": {"org.opencontainers.image.title": f"dockyard e2e {seed} {arch}"}}
    manifest_bytes = _canonical(manifest)
    image = Image(layout.put(manifest_bytes, OCI_MANIFEST), config_desc, layers, manifest_bytes,
                  {"architecture": arch, "os": "linux"})
    layout.images.append(image)
    return image


def build_image_layout(root: Path, tag: str, seed: str, *,
                       layer_sizes: tuple[int, ...] = DEFAULT_LAYER_SIZES) -> Layout:
    """An OCI layout with one linux/amd64 image of ``len(layer_sizes)`` gzip layers, tagged ``tag``."""
    layout = Layout(root)
    image = add_image(layout, seed, layer_sizes=layer_sizes)
    layout.tag(image.manifest, tag)
    return layout


def build_multiarch_layout(root: Path, tag: str, seed: str, *, arches: tuple[str, ...] = ("amd64", "arm64"),
                           layer_sizes: tuple[int, ...] = (200, 20 * 1024)) -> Layout:
    """An OCI layout whose ``tag`` is an image index over one image per architecture."""
    layout = Layout(root)
    children = []
    for arch in arches:
        image = add_image(layout, seed, arch=arch, layer_sizes=layer_sizes)
        children.append({**image.manifest, "platform": image.platform})
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}
    layout.index_bytes = _canonical(index)
    layout.index = layout.put(layout.index_bytes, OCI_INDEX)
    layout.tag(layout.index, tag)
    return layout


# ---- reading and checking copies ------------------------------------------------------------


def blob_path(oci_dir: Path, digest: str) -> Path:
    algo, hexpart = digest.split(":", 1)
    return Path(oci_dir) / "blobs" / algo / hexpart


def read_blob(oci_dir: Path, digest: str) -> bytes:
    return blob_path(oci_dir, digest).read_bytes()


def layout_ref(oci_dir: Path, tag: str) -> dict:
    """The descriptor that index.json of an OCI layout records for ``tag``."""
    outer = json.loads((Path(oci_dir) / "index.json").read_text())
    found = [m for m in outer.get("manifests", []) if m.get("annotations", {}).get(REF_NAME) == tag]
    assert len(found) == 1, f"tag {tag!r} not (uniquely) in {oci_dir}/index.json: {outer}"
    return found[0]


def verify_oci_layout(oci_dir: Path) -> set[str]:
    """Check that every blob of an OCI layout hashes to its file name; return the set of digests."""
    digests = set()
    root = Path(oci_dir) / "blobs"
    for path in sorted(root.rglob("*")):
        if path.is_dir():
            continue
        algo = path.parent.name
        assert algo == "sha256", f"unexpected blob algorithm dir {path}"
        actual = sha256_file(path)
        assert actual == f"sha256:{path.name}", f"{path} holds {actual}"
        digests.add(actual)
    return digests


@dataclass
class DirCopy:
    """What a skopeo ``dir:`` copy holds, already checked for internal consistency."""

    manifest_digest: str  # sha256 of manifest.json
    manifest_bytes: bytes
    blobs: set[str]  # configs and layers (bare-hex files)
    child_manifests: set[str]  # <hex>.manifest.json files (index copies with --all)


def verify_dir_copy(directory: Path) -> DirCopy:
    """Check every file of a skopeo ``dir:`` copy hashes to its name; return what it holds."""
    directory = Path(directory)
    manifest_bytes = (directory / "manifest.json").read_bytes()
    blobs, children = set(), set()
    for path in sorted(directory.iterdir()):
        m = _HEX_NAME.fullmatch(path.name)
        if not m:
            assert path.name in ("manifest.json", "version", "signature-1") or path.name.startswith("signature"), \
                f"unexpected file in dir: copy: {path}"
            continue
        actual = sha256_file(path)
        assert actual == f"sha256:{m.group(1)}", f"{path} holds {actual}"
        (children if m.group(2) else blobs).add(actual)
    assert (directory / "version").read_text().startswith("Directory Transport Version")
    return DirCopy(sha256_bytes(manifest_bytes), manifest_bytes, blobs, children)


def assert_same_blobs(source: Path, copy: Path, digests: set[str]) -> None:
    """Each digest's bytes in OCI layout ``copy`` equal those in ``source``."""
    for digest in sorted(digests):
        assert read_blob(copy, digest) == read_blob(source, digest), f"{digest} differs"
