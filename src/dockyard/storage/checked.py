"""A wrapper that validates every key before a driver sees it.

Keys are relative, ``/``-separated, made of ``[A-Za-z0-9._-]`` components, with
no empty, ``.`` or ``..`` component: nothing can escape a driver's root.
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator

from dockyard.storage.base import InvalidKey, ObjectInfo, StorageDriver, StorageError

# components start with a letter, digit or "_", so "." and ".." can never match
_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*(?:/[A-Za-z0-9_][A-Za-z0-9._-]*)*")


def check_key(key: str, *, prefix: bool = False) -> str:
    if prefix and key.endswith("/"):
        ok = _KEY.fullmatch(key, 0, len(key) - 1)
    else:
        ok = _KEY.fullmatch(key)
    if not ok:
        raise InvalidKey(f"invalid storage key {key!r}", key=key)
    return key


class CheckedDriver:
    def __init__(self, inner: StorageDriver):
        self.inner = inner
        self.name = inner.name

    def write_at(self, key: str, offset: int, chunks: Iterable[bytes]) -> int:
        return self.inner.write_at(check_key(key), offset, chunks)

    def move(self, src: str, dst: str) -> None:
        self.inner.move(check_key(src), check_key(dst))

    def read(self, key: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        return self.inner.read(check_key(key), offset, length)

    def stat(self, key: str) -> ObjectInfo | None:
        return self.inner.stat(check_key(key))

    def delete(self, key: str) -> None:
        self.inner.delete(check_key(key))

    def delete_many(self, keys: Iterable[str]) -> dict[str, StorageError | None]:
        """An invalid key is that key's error (the driver never sees it); the rest go on."""
        out: dict[str, StorageError | None] = {}
        valid = []
        for key in keys:
            try:
                valid.append(check_key(key))
            except InvalidKey as exc:
                out[key] = exc
        if valid:
            out.update(self.inner.delete_many(valid))
        return out

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        return self.inner.list(check_key(prefix, prefix=True))

    def local_path(self, key: str) -> str | None:
        return self.inner.local_path(check_key(key))

    def redirect_url(self, key: str, ttl: int) -> str | None:
        """A presigned download URL, where the driver can make one."""
        make = getattr(self.inner, "redirect_url", None)
        return make(check_key(key), ttl) if make else None
