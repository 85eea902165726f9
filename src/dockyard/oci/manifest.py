"""Parsing and validation of manifests and indexes (OCI image spec, Docker schema 2).

:func:`parse` turns a pushed payload into a :class:`ParsedManifest`: the media
type it really has and everything it references. It checks form only; whether
the referenced content exists is the registry's business, not this module's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from dockyard.oci import mediatypes as mt
from dockyard.oci.digest import Digest, InvalidDigest

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_JSON_DEPTH = 64
"""Real manifests nest 4 levels (index, descriptor, platform, features); Python's parser gives
up with RecursionError near 1,000 and recursive code walking a document near that fails too."""


def nesting(doc: Any, stop_after: int | None = None) -> int:
    """How deep the lists and objects of a parsed JSON document nest, one level at a time (no
    recursion); counting stops once past ``stop_after``."""
    depth, level = 0, [doc]
    while True:
        level = [n for n in level if isinstance(n, (list, dict))]
        if not level or (stop_after is not None and depth > stop_after):
            return depth
        depth += 1
        below: list = []
        for n in level:
            below.extend(n.values() if isinstance(n, dict) else n)
        level = below


class JSONTooDeep(ValueError):
    """JSON nested deeper than a caller allows."""


def loads_bounded(payload: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` for untrusted input: :class:`JSONTooDeep` (a ValueError, as for any JSON
    that does not parse) when lists and objects nest deeper than ``max_depth``. Past ~1,000 levels the parser
    itself gives up with RecursionError (before using much stack or time); below that the
    parsed document is measured, so no later recursive walk over it can fail."""
    try:
        doc = json.loads(payload)
    except RecursionError as exc:
        raise JSONTooDeep(f"JSON nested too deep (at most {max_depth} levels allowed)") from exc
    if nesting(doc, max_depth) > max_depth:
        raise JSONTooDeep(f"JSON nested too deep (at most {max_depth} levels allowed)")
    return doc


class ManifestInvalid(ValueError):
    """The payload is not a manifest this registry accepts."""


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None
    urls: tuple[str, ...] = ()
    platform: dict[str, Any] | None = None


@dataclass(slots=True)
class ParsedManifest:
    media_type: str
    blobs: list[Descriptor] = field(default_factory=list)
    """Config and layers the registry must hold (foreign layers left out)."""
    children: list[Descriptor] = field(default_factory=list)
    """Manifests an index points at."""
    subject: Descriptor | None = None
    artifact_type: str | None = None
    """``artifactType``, else the config's media type, as the referrers API reports it."""
    annotations: dict[str, str] | None = None

    @property
    def is_index(self) -> bool:
        return self.media_type in mt.INDEXES


def _descriptor(obj: Any, where: str) -> Descriptor:
    if not isinstance(obj, dict):
        raise ManifestInvalid(f"{where}: descriptor must be an object")
    media_type = obj.get("mediaType")
    digest = obj.get("digest")
    size = obj.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise ManifestInvalid(f"{where}: mediaType missing")
    if not isinstance(digest, str):
        raise ManifestInvalid(f"{where}: digest missing")
    try:
        Digest.parse(digest)
    except InvalidDigest as exc:
        raise ManifestInvalid(f"{where}: {exc}") from exc
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestInvalid(f"{where}: size must be a non-negative integer")
    annotations = obj.get("annotations")
    if annotations is not None and not (
        isinstance(annotations, dict) and all(isinstance(v, str) for v in annotations.values())
    ):
        raise ManifestInvalid(f"{where}: annotations must map strings to strings")
    urls = obj.get("urls") or ()
    if not isinstance(urls, (list, tuple)) or not all(isinstance(u, str) for u in urls):
        raise ManifestInvalid(f"{where}: urls must be a list of strings")
    artifact_type = obj.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise ManifestInvalid(f"{where}: artifactType must be a string")
    platform = obj.get("platform")
    if platform is not None and not isinstance(platform, dict):
        raise ManifestInvalid(f"{where}: platform must be an object")
    return Descriptor(media_type, digest, size, artifact_type, annotations, tuple(urls), platform)


def _media_type(doc: dict[str, Any], content_type: str | None) -> str:
    declared = doc.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise ManifestInvalid("mediaType must be a string")
    content_type = (content_type or "").split(";")[0].strip() or None
    if declared and content_type and declared != content_type:
        raise ManifestInvalid(f"Content-Type {content_type} does not match mediaType {declared}")
    media_type = declared or content_type
    if media_type is None or media_type not in mt.MANIFESTS:
        if media_type is None or media_type in ("application/json", "application/octet-stream"):
            media_type = mt.OCI_INDEX if "manifests" in doc else mt.OCI_MANIFEST
        else:
            raise ManifestInvalid(f"unsupported manifest media type {media_type}")
    return media_type


def parse(payload: bytes, content_type: str | None = None) -> ParsedManifest:
    if len(payload) > MAX_MANIFEST_BYTES:
        raise ManifestInvalid(f"manifest is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        doc = loads_bounded(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestInvalid(f"manifest is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ManifestInvalid("manifest must be a JSON object")
    if doc.get("schemaVersion") != 2:
        raise ManifestInvalid("schemaVersion must be 2")
    media_type = _media_type(doc, content_type)
    parsed = ParsedManifest(media_type=media_type)
    annotations = doc.get("annotations")
    if annotations is not None:
        if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
            raise ManifestInvalid("annotations must map strings to strings")
        parsed.annotations = annotations
    artifact_type = doc.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise ManifestInvalid("artifactType must be a string")
    if "subject" in doc and doc["subject"] is not None:
        parsed.subject = _descriptor(doc["subject"], "subject")

    if media_type in mt.INDEXES:
        manifests = doc.get("manifests")
        if not isinstance(manifests, list):
            raise ManifestInvalid("an index needs a manifests list")
        parsed.children = [_descriptor(m, f"manifests[{i}]") for i, m in enumerate(manifests)]
        parsed.artifact_type = artifact_type
        return parsed

    if "config" not in doc:
        raise ManifestInvalid("an image manifest needs a config descriptor")
    config = _descriptor(doc["config"], "config")
    layers = doc.get("layers")
    if layers is None and media_type == mt.OCI_MANIFEST:
        raise ManifestInvalid("an image manifest needs a layers list")
    if not isinstance(layers or [], list):
        raise ManifestInvalid("layers must be a list")
    parsed.blobs.append(config)
    for i, layer in enumerate(layers or []):
        d = _descriptor(layer, f"layers[{i}]")
        if d.urls and d.media_type in mt.FOREIGN_LAYERS:
            continue
        parsed.blobs.append(d)
    parsed.artifact_type = artifact_type or config.media_type
    return parsed
