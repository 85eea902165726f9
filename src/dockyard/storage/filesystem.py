"""Filesystem driver: one file per key under a root directory."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Iterable, Iterator

from dockyard.storage.base import ObjectInfo, PathNotFound, StorageError, StorageFull

CHUNK = 1024 * 1024
FLUSH_EVERY = 16 * 1024 * 1024  # write-behind: bytes between starting the writeback of a range


def _sync_file_range():
    """libc's sync_file_range (Linux), or None: the final fsync then does all the work."""
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return fn


_SFR = _sync_file_range()
_SFR_WAIT_BEFORE, _SFR_WRITE, _SFR_WAIT_AFTER = 1, 2, 4


class _WriteBehind:
    """Flush as you go: every :data:`FLUSH_EVERY` bytes, start the writeback of the range just
    written and wait for the one before it, so the disk works while the body still streams
    and the fsync before the commit (``move``) finds little left to write: "last byte to
    201" stays small for a large blob, and dirty pages stay bounded. A hint only: durability
    still comes from that fsync."""

    def __init__(self, fd: int, start: int):
        self.fd = fd
        self.flushed = start  # writeback started up to here
        self.previous = start  # and waited for up to here

    def wrote(self, pos: int) -> None:
        if pos - self.flushed < FLUSH_EVERY:
            return
        if _SFR(self.fd, self.flushed, pos - self.flushed, _SFR_WRITE) != 0:
            return
        if self.flushed > self.previous:
            _SFR(self.fd, self.previous, self.flushed - self.previous,
                 _SFR_WAIT_BEFORE | _SFR_WRITE | _SFR_WAIT_AFTER)
            self.previous = self.flushed
        self.flushed = pos


class FilesystemDriver:
    name = "filesystem"

    def __init__(self, root: str | os.PathLike, *, fsync: bool = True):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._root = str(self.root)
        self.fsync = fsync

    def _path(self, key: str) -> Path:
        return self.root / key

    def _error(self, exc: OSError, key: str) -> StorageError:
        cls = {errno.ENOENT: PathNotFound, errno.ENOSPC: StorageFull, errno.EDQUOT: StorageFull}.get(
            exc.errno, StorageError)
        return cls(exc.strerror or str(exc), driver=self.name, key=key)

    def write_at(self, key: str, offset: int, chunks: Iterable[bytes]) -> int:
        path = self._path(key)
        try:
            fd = self._in_dir(path, lambda: os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))
            try:
                size = os.fstat(fd).st_size
                if offset > size:
                    raise StorageError(f"write at {offset} past end {size}", driver=self.name, key=key)
                os.lseek(fd, offset, os.SEEK_SET)
                pos = offset
                behind = _WriteBehind(fd, offset) if self.fsync and _SFR is not None else None
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        n = os.write(fd, view)
                        view = view[n:]
                        pos += n
                    if behind is not None:
                        behind.wrote(pos)
                if pos < size:
                    os.ftruncate(fd, pos)
                return pos
            finally:
                os.close(fd)
        except OSError as exc:
            raise self._error(exc, key) from exc

    def move(self, src: str, dst: str) -> None:
        s, d = self._path(src), self._path(dst)
        try:
            if self.fsync:
                fd = os.open(s, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            self._in_dir(d, lambda: os.replace(s, d), source=s)
            if self.fsync:  # the rename itself survives a power loss only once its directory is synced
                dfd = os.open(d.parent, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        except OSError as exc:
            raise self._error(exc, src) from exc

    @staticmethod
    def _in_dir(path: Path, op, source: Path | None = None):
        """Run ``op``, which creates ``path``, after creating its directory. Directories are
        never removed (``delete`` leaves them: the layout's fan-out bounds them to 256 per
        digest algorithm plus ``uploads/``), so nothing can pull one from under a writer.
        The directory nearly always exists: ``op`` runs first, and the directory is made only
        when ``op`` finds it missing (``makedirs`` on every call cost a failed ``mkdir`` each
        time: an eighth of a small blob's push)."""
        try:
            return op()
        except FileNotFoundError:
            if source is not None and not os.path.lexists(source):
                raise  # the source is what is missing, not the directory
            os.makedirs(path.parent, exist_ok=True)
        return op()

    def read(self, key: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        try:
            fh = open(self._path(key), "rb", buffering=0)
        except OSError as exc:
            raise self._error(exc, key) from exc
        return self._iter(fh, offset, length)

    @staticmethod
    def _iter(fh, offset: int, length: int | None) -> Iterator[bytes]:
        with fh:
            fh.seek(offset)
            remaining = length
            while remaining is None or remaining > 0:
                chunk = fh.read(CHUNK if remaining is None else min(CHUNK, remaining))
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            st = os.stat(self._path(key))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._error(exc, key) from exc
        return ObjectInfo(key, st.st_size, st.st_mtime)

    def delete(self, key: str) -> None:
        path = os.path.join(self._root, key)  # plain strings: the collector's hot path
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._error(exc, key) from exc

    def delete_many(self, keys: Iterable[str]) -> dict[str, StorageError | None]:
        """A loop: a filesystem has no batch delete (and needs none: no round trips)."""
        out: dict[str, StorageError | None] = {}
        for key in keys:
            try:
                self.delete(key)
                out[key] = None
            except StorageError as exc:
                out[key] = exc
        return out

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        base = self._path(prefix.rstrip("/")) if "/" in prefix else self.root
        start = base if base.is_dir() else base.parent
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames.sort()
            for name in sorted(filenames):
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if not key.startswith(prefix):
                    continue
                try:
                    st = full.stat()
                except FileNotFoundError:
                    continue
                yield ObjectInfo(key, st.st_size, st.st_mtime)

    def local_path(self, key: str) -> str | None:
        return str(self._path(key))
