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
import time
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

    def take(self, digest: str) -> int | None:
        """This process's claim on fetching ``digest``: a locked descriptor of the file now at
        its path (None: another process holds it)."""
        path = self._path(digest)
        while True:
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    return fd
            except BlockingIOError:
                os.close(fd)
                return None
            except FileNotFoundError:
                pass
            except BaseException:  # no lock to be had here (ENOLCK on a network file system...): the caller
                os.close(fd)       # fetches without a host claim, and no descriptor is left behind
                raise
            os.close(fd)  # its holder let go and unlinked it meanwhile: lock the one there now

    def release(self, digest: str, fd: int) -> None:
        try:
            os.unlink(self._path(digest))  # still ours: nobody replaces a file they have not locked
        finally:
            os.close(fd)

    def wait(self, digest: str, timeout: float = 600.0, poll: float = 0.01) -> None:
        """Wait until no process holds a claim on ``digest`` (its fetch has ended), at most
        ``timeout`` seconds (a worker that hangs holding one does not hold others forever)."""
        deadline = time.monotonic() + timeout
        while True:
            fd = self.take(digest)
            if fd is not None:
                self.release(digest, fd)
                return
            if time.monotonic() >= deadline:
                return
            time.sleep(poll)
