"""Container runtimes the agent keeps images in: one small protocol, two adapters.

``directory`` (here): an OCI layout per image under ``images_dir/runtime/`` plus the exported
tars in ``images_dir/tars/``, for runtimes that load tars; its containers are the files in
``images_dir/containers/`` (``{"image": DIGEST}``). ``podman`` (``podman.py``): the real
podman CLI. Removing an image a container uses is refused (RuntimeRefused), as podman does.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Protocol

from dockyard.agent.files import ImagesDir, digest_of_key, key, remove

REPO_ANNOTATION = "dev.dockyard.repository"
TAG_ANNOTATION = "dev.dockyard.tag"
BYTES_ANNOTATION = "dev.dockyard.bytes"
REF_NAME = "org.opencontainers.image.ref.name"


class RuntimeRefused(Exception):
    """The runtime would not do it (an image in use, a load that failed); the message says why."""


@dataclass
class RuntimeImage:
    repository: str
    tag: str | None
    digest: str
    bytes: int
    containers: list[str] = field(default_factory=list)


class Runtime(Protocol):
    name: str

    def images(self) -> Iterator[RuntimeImage]: ...

    def load(self, tar: Path, repository: str, tag: str | None, digest: str) -> None: ...

    def remove(self, digest: str) -> bool: ...

    def create_container(self, name: str, digest: str) -> None: ...


class DirectoryRuntime:
    name = "directory"

    def __init__(self, files: ImagesDir):
        self.files = files
        self.root = files.root / "runtime"
        self.containers_dir = files.root / "containers"
        self.root.mkdir(parents=True, exist_ok=True)
        self.containers_dir.mkdir(parents=True, exist_ok=True)

    def containers(self) -> dict[str, list[str]]:
        users: dict[str, list[str]] = defaultdict(list)
        for entry in os.scandir(self.containers_dir):
            if entry.name.endswith(".json"):
                try:
                    image = json.loads(Path(entry.path).read_text()).get("image")
                except (ValueError, OSError, AttributeError):
                    continue
                if isinstance(image, str):
                    users[image].append(entry.name[:-5])
        return users

    def images(self) -> Iterator[RuntimeImage]:
        users = self.containers()
        for entry in os.scandir(self.root):
            digest = digest_of_key(entry.name)
            if digest is None:
                continue
            try:
                index = json.loads((Path(entry.path) / "index.json").read_text())
                notes = index["manifests"][0].get("annotations") or {}
            except (OSError, ValueError, KeyError, IndexError):
                continue
            yield RuntimeImage(notes.get(REPO_ANNOTATION, ""), notes.get(TAG_ANNOTATION) or None, digest,
                               int(notes.get(BYTES_ANNOTATION, 0)), sorted(users.get(digest, [])))

    def load(self, tar: Path, repository: str, tag: str | None, digest: str) -> None:
        """Unpack an OCI archive into a layout, each blob checked against its digest, then rename it in."""
        tmp = self.files.temp(".layout")
        try:
            with tarfile.open(tar) as archive:
                for member in archive:
                    name = member.name
                    ok = name in ("oci-layout", "index.json") or (
                        name.count("/") == 2 and name.split("/")[1] in ("sha256", "sha512") and ".." not in name)
                    if not member.isfile() or not ok:
                        if member.isdir():
                            continue
                        raise RuntimeRefused(f"unexpected entry in image archive: {name[:100]}")
                    dest = tmp / name
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    src = archive.extractfile(member)
                    h = hashlib.new(name.split("/")[1]) if name.startswith("blobs/") else None
                    with open(dest, "wb") as out:
                        while chunk := src.read(1 << 20):
                            out.write(chunk)
                            if h:
                                h.update(chunk)
                    if h and h.hexdigest() != name.split("/")[2]:
                        raise RuntimeRefused(f"blob {name} does not hash to its name")
            if not (tmp / "blobs" / digest.replace(":", "/")).exists():
                raise RuntimeRefused(f"image archive lacks manifest {digest}")
            final = self.root / key(digest)
            if final.exists():
                remove(final)
            os.replace(tmp, final)
        finally:
            remove(tmp)

    def remove(self, digest: str) -> bool:
        users = self.containers().get(digest)
        if users:
            raise RuntimeRefused(f"image is in use by container(s) {', '.join(sorted(users))}")
        path = self.root / key(digest)
        if not path.exists():
            return False
        doomed = self.files.temp(".removing")
        os.replace(path, doomed)  # gone from the runtime in one step; the files go next
        remove(doomed)
        return True

    def create_container(self, name: str, digest: str) -> None:
        self.files.write_json(self.containers_dir / f"{name}.json", {"image": digest})

