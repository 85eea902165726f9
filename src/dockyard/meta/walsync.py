"""Group commit for SQLite: a commit is synced to disk before its transaction returns, and
commits that finish while a sync runs share the next one.

SQLite's ``synchronous=FULL`` syncs the write-ahead log inside COMMIT, that is, while the
writer holds the database's write lock: every writer waits for every earlier writer's
fsync (about 1 ms here, 17 of them per small-image push), so the registry's write rate was
bounded by the disk's sync latency, not by its CPU. With ``synchronous=NORMAL`` in WAL mode
SQLite writes the commit's frames to the log and syncs the log only before a checkpoint
(and its header when the log restarts, and the directory when the log is created); the
frames of the last commits would be lost on a power loss. :class:`WalSync` adds the
missing sync after the lock is released:

1. the transaction commits (its frames are in the log file, in the page cache);
2. it takes a ticket (a number, increasing in the order the tickets are taken);
3. it waits until a sync that *started* after its ticket was taken has finished: one
   thread syncs the log (``fdatasync``) for every ticket taken so far while the others
   wait on a condition; a ticket taken during that sync waits for the next one.

So ``Database.write()`` returns only once its commit is on disk, as with FULL, and a 2xx
still means durable; meanwhile the next writers commit without waiting for the disk. A log
that no longer exists (the last connection closed it after a full checkpoint, which syncs
the database file) has nothing left to sync. Each process syncs for its own commits (the
sync is of the file, so one process's sync also covers another's frames; that is merely
not relied on). A sync that fails raises ``OSError`` in the waiter whose sync it was; the
others try again themselves.
"""

from __future__ import annotations

import errno
import os
import threading


class WalSync:
    def __init__(self, database_path: str):
        self.path = f"{database_path}-wal"
        self._cond = threading.Condition()
        self._taken = 0  # tickets taken (commits made by this process)
        self._synced = 0  # every ticket up to this one is on disk
        self._syncing = False
        self.syncs = 0  # syncs run (for tests and the curious: commits / syncs = the group size)

    def committed(self) -> int:
        """A ticket for a commit that has just returned."""
        with self._cond:
            self._taken += 1
            return self._taken

    def wait(self, ticket: int) -> None:
        """Return once the commit that took ``ticket`` is on disk (syncing it if no one is)."""
        with self._cond:
            while self._synced < ticket:
                if self._syncing:
                    self._cond.wait()
                    continue
                self._syncing = True
                target = self._taken
                self._cond.release()
                try:
                    self._sync()
                finally:  # on failure the error is this waiter's; the others try again
                    self._cond.acquire()
                    self._syncing = False
                    self._cond.notify_all()
                self._synced = max(self._synced, target)

    def _sync(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ENOENT:  # checkpointed into the database file and removed
                return
            raise
        try:
            os.fdatasync(fd)
            self.syncs += 1
        finally:
            os.close(fd)

    def commit(self) -> None:
        """:meth:`committed` then :meth:`wait`: for a commit that just returned."""
        self.wait(self.committed())
