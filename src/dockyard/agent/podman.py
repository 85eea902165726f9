"""The ``podman`` runtime adapter: the real podman CLI.

Images of this registry are the ones named ``<registry host>/<repository>:<tag>`` (as
podman names what it pulls from it, and as the agent names what it loads); images from
other registries are not this agent's business. ``podman rmi`` without ``--force``
refuses an image a container uses, which is what the agent wants.
"""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Iterator

from dockyard.agent.runtime import RuntimeImage, RuntimeRefused


class PodmanRuntime:
    name = "podman"

    def __init__(self, registry_host: str, args: list[str], binary: str = "podman"):
        self.prefix = registry_host + "/"
        self.cmd = [binary, *args]

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([*self.cmd, *args], capture_output=True, text=True, timeout=600)
        if check and proc.returncode != 0:
            raise RuntimeRefused(f"podman {args[0]}: {(proc.stderr or proc.stdout).strip()[:500]}")
        return proc

    def _name(self, names: list[str]) -> tuple[str, str | None] | None:
        for n in names or []:
            if n.startswith(self.prefix):
                rest = n[len(self.prefix):]
                if "@" in rest:
                    return rest.split("@", 1)[0], None
                repo, _, tag = rest.rpartition(":")
                return (repo, tag) if repo else (rest, None)
        return None

    def images(self) -> Iterator[RuntimeImage]:
        users: dict[str, list[str]] = defaultdict(list)
        for c in json.loads(self._run("ps", "-a", "--format", "json").stdout or "[]"):
            for name in c.get("Names") or []:
                users[c.get("ImageID", "")].append(name)
        for img in json.loads(self._run("images", "--format", "json").stdout or "[]"):
            named = self._name((img.get("Names") or []) + (img.get("RepoDigests") or []))
            if named is None or not img.get("Digest"):
                continue
            yield RuntimeImage(named[0], named[1], img["Digest"], int(img.get("Size") or 0),
                               sorted(users.get(img.get("Id", ""), [])))

    def _id(self, digest: str) -> str | None:
        for img in json.loads(self._run("images", "--format", "json").stdout or "[]"):
            if img.get("Digest") == digest and self._name((img.get("Names") or []) + (img.get("RepoDigests") or [])):
                return img["Id"]
        return None

    def load(self, tar: Path, repository: str, tag: str | None, digest: str) -> None:
        self._run("load", "-q", "-i", str(tar))
        if self._id(digest) is None:
            raise RuntimeRefused(f"podman load of {tar.name} did not yield {digest}")

    def remove(self, digest: str) -> bool:
        image_id = self._id(digest)
        if image_id is None:
            return False
        proc = self._run("rmi", image_id, check=False)
        if proc.returncode != 0:
            if "image not known" in proc.stderr:
                return False
            raise RuntimeRefused(f"podman rmi: {proc.stderr.strip()[:500]}")
        return True

    def create_container(self, name: str, digest: str) -> None:
        image_id = self._id(digest)
        if image_id is None:
            raise RuntimeRefused(f"no image {digest}")
        self._run("create", "--name", name, image_id, "/bin/true")
