"""Image references as workloads write them: ``[host[:port]/]repo[:tag][@digest]``.

Pure parsing; :class:`InvalidReference` for anything that is not one.
"""

from __future__ import annotations

from dataclasses import dataclass

from dockyard.oci.digest import Digest, InvalidDigest
from dockyard.oci.names import is_valid_name, is_valid_tag

_SCHEMES = ("docker-pullable://", "docker://", "containerd://", "cri-o://")


class InvalidReference(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ImageRef:
    host: str | None
    repository: str
    tag: str | None
    digest: str | None

    def __str__(self) -> str:
        out = f"{self.host}/{self.repository}" if self.host else self.repository
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def parse_reference(text: str) -> ImageRef:
    ref = text.strip()
    for scheme in _SCHEMES:
        if ref.startswith(scheme):
            ref = ref[len(scheme):]
    if not ref:
        raise InvalidReference("empty reference")
    digest = None
    if "@" in ref:
        ref, _, digest = ref.partition("@")
        try:
            digest = str(Digest.parse(digest))
        except InvalidDigest as exc:
            raise InvalidReference(f"{text!r}: {exc}") from exc
    host = None
    first, sep, rest = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        host, ref = first, rest
    tag = None
    name, sep, maybe_tag = ref.rpartition(":")
    if sep and "/" not in maybe_tag:
        ref, tag = name, maybe_tag
        if not is_valid_tag(tag):
            raise InvalidReference(f"{text!r}: invalid tag {tag!r}")
    if not is_valid_name(ref):
        raise InvalidReference(f"{text!r}: invalid repository name {ref!r}")
    return ImageRef(host, ref, tag, digest)
