"""The storage-driver protocol.

A driver stores opaque objects under keys such as ``blobs/sha256/ab/<hex>``.
It holds no policy: what to delete and when is decided in ``lifecycle``.

Contracts (every driver passes ``tests/unit/storage/test_driver_suite.py``):

``write_at(key, offset, chunks) -> int``
    Stream ``chunks`` into the staging object ``key`` starting at ``offset``,
    discarding anything the object held past ``offset``; returns the new size.
    Used for upload sessions only: a staging object is never read by clients.
``move(src, dst)``
    Make the staging object ``src`` visible as ``dst`` in one step and remove
    ``src``. A filesystem renames; an object store copies server-side. If
    ``dst`` exists it is replaced (content-addressed keys hold equal bytes).
``read(key, offset=0, length=None) -> Iterator[bytes]``
    The bytes of ``key`` in order, from ``offset``, at most ``length`` of them.
``stat(key) -> ObjectInfo | None``
``delete(key)``
    Remove ``key``; deleting a missing key is not an error.
``delete_many(keys) -> dict[key, StorageError | None]``
    Remove every key, as ``delete`` would, in as few calls to the backend as it allows
    (S3: one DeleteObjects per 1,000 keys, the cap of AWS and of Ceph RGW 16.2; a
    filesystem: a loop). The result names every key: ``None`` when it is gone (a missing
    key is not an error), else the error of that key alone. Raises :class:`StorageError`
    only when the call failed as a whole, so that nothing is known about any key.
``list(prefix) -> Iterator[ObjectInfo]``
    Every object under ``prefix``, streamed page by page. Only ``fsck`` calls it.
``local_path(key) -> str | None``
    A filesystem path for zero-copy sends, where the driver has one.

Errors: :class:`StorageError` (carries the driver name and key);
:class:`PathNotFound` when reading or moving a key that does not exist;
:class:`StorageFull` when the backend has no room left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol


class StorageError(Exception):
    def __init__(self, message: str, *, driver: str = "", key: str = ""):
        super().__init__(f"{driver}: {key}: {message}" if driver else message)
        self.driver = driver
        self.key = key


class PathNotFound(StorageError):
    pass


class InvalidKey(StorageError):
    pass


class StorageFull(StorageError):
    """The backend has no room left (ENOSPC, a quota)."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    modified: float


class StorageDriver(Protocol):
    name: str

    def write_at(self, key: str, offset: int, chunks: Iterable[bytes]) -> int: ...

    def move(self, src: str, dst: str) -> None: ...

    def read(self, key: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]: ...

    def stat(self, key: str) -> ObjectInfo | None: ...

    def delete(self, key: str) -> None: ...

    def delete_many(self, keys: Iterable[str]) -> dict[str, StorageError | None]: ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]: ...

    def local_path(self, key: str) -> str | None: ...


class Deleter(Protocol):
    """The narrow protocol the collector needs. A deleter whose class has no ``delete_many``
    (a test double, a wrapper that overrides ``delete`` and forwards the rest) is deleted
    key by key through ``delete``; see :class:`dockyard.lifecycle.deleter.DeletePool`."""

    def delete(self, key: str) -> None: ...


class BatchDeleter(Deleter, Protocol):
    def delete_many(self, keys: Iterable[str]) -> dict[str, StorageError | None]: ...
