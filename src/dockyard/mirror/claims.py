"""Claims on a blob's fetch from an upstream, shared by the processes of one host (the
workers of ``serve --workers N``, which each run a mirror): a request in one worker for a
blob another worker is fetching waits for that fetch instead of fetching it a second time.

A claim is an exclusive ``flock`` on ``<directory>/<algorithm>-<hex>``; its holder unlinks
the file before it lets go, so the directory holds only the fetches in flight. The kernel
drops the lock of a process that dies, so a crashed worker never leaves a claim behind (a
file it leaves is taken by the next fetch). A taker checks that the file it locked is still
the one at the path (it may have been unlinked meanwhile) and tries again if not.
Replicas on other hosts do not see these claims (the push path deduplicates what they store).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class HostClaims:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError:  # take() raises then, and the caller fetches without a host claim
            pass

    def _path(self, digest: str) -> str:
        return str(self.directory / digest.replace(":", "-", 1))

    def _lock(self, digest: str, blocking: bool) -> int | None:
        """A locked descriptor of the file now at the path (None: held elsewhere, not blocking)."""
        path = self._path(digest)
        while True:
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return None
            try:
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)  # its holder let go and unlinked it meanwhile: lock the one there now

    def take(self, digest: str) -> int | None:
        """This process's claim on fetching ``digest`` (None: another process holds it)."""
        return self._lock(digest, blocking=False)

    def release(self, digest: str, fd: int) -> None:
        try:
            os.unlink(self._path(digest))  # still ours: nobody replaces a file they have not locked
        finally:
            os.close(fd)

    def wait(self, digest: str) -> None:
        """Wait until no process holds a claim on ``digest`` (its fetch has ended)."""
        self.release(digest, self._lock(digest, blocking=True))
