"""The agent's files in ``images_dir``, written down once::

    images_dir/
      tars/<algo>-<hex>.tar      OCI archive of each image the agent pulled (runtimes that load tars load it)
      state/<algo>-<hex>.json    the agent's record of an image: repository, tag, digest, managed, pulled_at,
                                 last_used (managed = pulled through ``dockyard image pull --host``)
      runtime/<algo>-<hex>/      the ``directory`` runtime: one OCI layout per image
      containers/<name>.json     the ``directory`` runtime: a container and the image digest it uses
      tmp/                       temporaries: every file is written here first and renamed into place
                                 after its digest is verified; emptied when the agent starts and by cleanup

A reader never sees a partial file: a rename within one filesystem is atomic, and a crash
leaves only entries in ``tmp/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator


class DigestMismatch(Exception):
    pass


def key(digest: str) -> str:
    """``sha256:ab..`` -> ``sha256-ab..`` (digests reach here verified by the registry's format)."""
    algo, _, hexpart = digest.partition(":")
    if algo not in ("sha256", "sha512") or not hexpart or not all(c in "0123456789abcdef" for c in hexpart):
        raise ValueError(f"not a digest: {digest[:80]!r}")
    return f"{algo}-{hexpart}"


def digest_of_key(name: str) -> str | None:
    algo, sep, hexpart = name.partition("-")
    return f"{algo}:{hexpart}" if sep and algo in ("sha256", "sha512") and hexpart else None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ImagesDir:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.tars = self.root / "tars"
        self.state = self.root / "state"
        self.tmp = self.root / "tmp"
        for d in (self.tars, self.state, self.tmp):
            d.mkdir(parents=True, exist_ok=True)

    def tar_path(self, digest: str) -> Path:
        return self.tars / f"{key(digest)}.tar"

    def state_path(self, digest: str) -> Path:
        return self.state / f"{key(digest)}.json"

    # ---- temporaries ------------------------------------------------------------
    def temp(self, suffix: str = "") -> Path:
        return self.tmp / f"{secrets.token_hex(8)}{suffix}"

    def temporaries(self) -> Iterator[tuple[Path, int]]:
        for entry in os.scandir(self.tmp):
            yield Path(entry.path), _size(Path(entry.path))

    def clear_temporaries(self) -> int:
        n = 0
        for path, _ in list(self.temporaries()):
            remove(path)
            n += 1
        return n

    def install(self, temp: Path, final: Path) -> None:
        """Rename a complete, verified temporary into place (durably)."""
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, final)
        _fsync_dir(final.parent)

    # ---- records ----------------------------------------------------------------
    def write_json(self, final: Path, doc: dict) -> None:
        tmp = self.temp(".json")
        with open(tmp, "w") as fh:
            json.dump(doc, fh)
            fh.flush()
            os.fsync(fh.fileno())
        self.install(tmp, final)

    def record(self, digest: str) -> dict | None:
        try:
            return json.loads(self.state_path(digest).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def records(self) -> Iterator[tuple[str, Path]]:
        for entry in os.scandir(self.state):
            if entry.name.endswith(".json"):
                digest = digest_of_key(entry.name[:-5])
                if digest:
                    yield digest, Path(entry.path)

    def tar_files(self) -> Iterator[tuple[str | None, Path]]:
        for entry in os.scandir(self.tars):
            yield (digest_of_key(entry.name[:-4]) if entry.name.endswith(".tar") else None), Path(entry.path)


def copy_verified(src: Iterable[bytes], dest: BinaryIO, digest: str, size: int | None = None) -> int:
    """Stream ``src`` into ``dest`` hashing it; DigestMismatch unless it hashes to ``digest``."""
    algo = digest.split(":", 1)[0]
    h = hashlib.new(algo)
    n = 0
    for chunk in src:
        h.update(chunk)
        dest.write(chunk)
        n += len(chunk)
        if size is not None and n > size:
            raise DigestMismatch(f"{digest}: more than the {size} bytes announced")
    if f"{algo}:{h.hexdigest()}" != digest or (size is not None and n != size):
        raise DigestMismatch(f"{digest}: received {n} bytes hashing to {algo}:{h.hexdigest()}")
    dest.flush()
    os.fsync(dest.fileno())
    return n


def _size(path: Path) -> int:
    try:
        if path.is_dir() and not path.is_symlink():
            return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        return path.lstat().st_size
    except FileNotFoundError:
        return 0


def size(path: Path) -> int:
    return _size(path)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
