"""A reserve of disk space, so that a full disk never blocks its own cure.

Freeing space takes database writes (a delete, the collector's tombstones); on a disk that
pushes have filled, SQLite cannot write its journal and nothing could be reclaimed. So
``dockyard serve`` keeps a file of ``disk_reserve`` bytes in the data directory. When the
database or the storage reports a full disk, the reserve is released at once (one error
line): deletes, the scrubber and the collector then have room to work, while new uploads
are refused (503) so they cannot eat that room. Once the disk has room for twice the reserve
again, the reserve is re-created and uploads are accepted again. Pulls never depend on it.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)
CHUNK = 1024 * 1024


class DiskReserve:
    RECHECK = 5.0  # seconds between attempts to re-create a released reserve

    def __init__(self, path: str | os.PathLike, size: int):
        self.path = Path(path)
        self.size = int(size)
        self._lock = threading.Lock()
        self._checked = 0.0

    def ensure(self) -> bool:
        """Create the reserve if the disk has room for twice its size; True if it is in place."""
        if self.size <= 0:
            return True
        try:
            if self.path.stat().st_size >= self.size:
                return True
        except FileNotFoundError:
            pass
        try:
            if shutil.disk_usage(self.path.parent).free < 2 * self.size:
                return False
            tmp = self.path.with_name(self.path.name + ".tmp")
            with open(tmp, "wb") as fh:
                try:  # allocated, not written: instant on most filesystems
                    os.posix_fallocate(fh.fileno(), 0, self.size)
                except OSError:
                    zeros = bytes(CHUNK)
                    left = self.size
                    while left > 0:
                        left -= fh.write(zeros[:min(CHUNK, left)])
                    fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("could not create the %d-byte disk reserve %s: %s", self.size, self.path, exc)
            return False
        log.info("disk reserve of %d bytes in place (%s)", self.size, self.path)
        return True

    def release(self, reason: str) -> bool:
        """Give the reserved space back to the disk; True if there was a reserve to release."""
        if self.size <= 0:
            return False
        with self._lock:
            try:
                self.path.unlink()
            except FileNotFoundError:
                return False
            self._checked = time.monotonic()
        log.error("disk full (%s): released the %d-byte reserve so deletes and collection can free space; "
                  "uploads are refused until the disk has room again", reason, self.size)
        return True

    def refuses_uploads(self) -> bool:
        """True while the reserve is released (or could never be made): the disk is full."""
        if self.size <= 0 or self.path.exists():
            return False
        with self._lock:
            if time.monotonic() - self._checked < self.RECHECK:
                return True
            self._checked = time.monotonic()
        return not self.ensure()
