"""References to images that running workloads use, from real listings.

Accepts the JSON of ``kubectl get pods,deployments,replicasets,statefulsets,daemonsets,
jobs,cronjobs -A -o json`` (a ``List`` of objects; also a single object), and plain text
with one reference per line (``#`` comments allowed). From Kubernetes objects it reads
every container, init container and ephemeral container image in any pod spec (also the
templates of controllers and cron jobs) and the resolved ``imageID`` of container statuses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from dockyard.oci.references import ImageRef, InvalidReference, parse_reference

_CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
_STATUS_LISTS = ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses")


@dataclass
class InUse:
    refs: list[ImageRef] = field(default_factory=list)
    invalid: list[tuple[str, str]] = field(default_factory=list)
    """(reference text, where it came from) for every reference that did not parse."""

    def add_text(self, text: str, where: str) -> None:
        try:
            self.refs.append(parse_reference(text))
        except InvalidReference:
            self.invalid.append((text, where))

    def keys(self) -> tuple[set[tuple[str, str]], set[tuple[str, str]], set[str]]:
        """(repository, tag) pairs, (repository, digest) pairs, and bare digests."""
        tags = {(r.repository, r.tag or "latest") for r in self.refs if not r.digest}
        digests = {(r.repository, r.digest) for r in self.refs if r.digest}
        return tags, digests, {r.digest for r in self.refs if r.digest}


def _images_in(obj: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(obj, dict):
        for key in _CONTAINER_LISTS:
            for i, c in enumerate(obj.get(key) or []):
                if isinstance(c, dict) and isinstance(c.get("image"), str):
                    yield c["image"], f"{path}.{key}[{i}].image"
        for key in _STATUS_LISTS:
            for i, c in enumerate(obj.get(key) or []):
                if isinstance(c, dict) and isinstance(c.get("imageID"), str) and c["imageID"]:
                    yield c["imageID"], f"{path}.{key}[{i}].imageID"
        for key, value in obj.items():
            if key not in _CONTAINER_LISTS and key not in _STATUS_LISTS and isinstance(value, (dict, list)):
                yield from _images_in(value, f"{path}.{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _images_in(value, f"{path}[{i}]")


def _object_name(obj: Any) -> str:
    if isinstance(obj, dict):
        meta = obj.get("metadata") or {}
        return f"{obj.get('kind', '?')}/{meta.get('namespace', '-')}/{meta.get('name', '?')}"
    return "?"


def load(sources: Iterable[tuple[str, str]]) -> InUse:
    """``sources``: (name, content) pairs, each kubectl JSON or a plain reference list."""
    found = InUse()
    for name, content in sources:
        stripped = content.lstrip()
        if stripped.startswith("{") or stripped.startswith("["):
            try:
                doc = json.loads(content)
            except ValueError as exc:
                found.invalid.append((content[:80], f"{name}: not valid JSON ({exc})"))
                continue
            items = doc.get("items", [doc]) if isinstance(doc, dict) else doc
            for item in items:
                for image, where in _images_in(item, _object_name(item)):
                    found.add_text(image, f"{name}: {where}")
        else:
            for n, line in enumerate(content.splitlines(), 1):
                line = line.split("#", 1)[0].strip()
                if line:
                    found.add_text(line, f"{name}:{n}")
    return found
