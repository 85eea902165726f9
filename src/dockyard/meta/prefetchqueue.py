"""PrefetchQueue: the durable prefetch queue of a replica's blob cache, in its CacheIndex file.

An item is a target (a digest, or an image reference ``repo:tag`` / ``repo@digest``) and
whether to pin what it brings. It stays in the table until it is done, so a replica that is
killed while it prefetches resumes the queue when it starts again: an item claimed by a
process that no longer runs (``owner``) is claimed again.
"""

from __future__ import annotations

from typing import Iterable

from dockyard.meta.cacheindex import CacheIndex, QueuedPrefetch

_COLS = "id, target, pin, queued, attempts, not_before, owner, last_error"


def _item(row) -> QueuedPrefetch:
    return QueuedPrefetch(row[0], row[1], bool(row[2]), row[3], row[4], row[5], row[6], row[7])


class PrefetchQueue:
    def __init__(self, index: CacheIndex):
        self.index = index

    def put(self, target: str, pin: bool, now: float) -> tuple[QueuedPrefetch, bool]:
        """Queue ``target``; (item, False) when it was queued already (a pin is added to it)."""
        with self.index.write() as c:
            row = c.execute(f"SELECT {_COLS} FROM prefetch WHERE target = ?", (target,)).fetchone()
            if row is not None:
                if pin and not row[2]:
                    c.execute("UPDATE prefetch SET pin = 1 WHERE id = ?", (row[0],))
                return _item(row), False
            c.execute("INSERT INTO prefetch (target, pin, queued) VALUES (?, ?, ?)", (target, int(pin), now))
            return _item(c.execute(f"SELECT {_COLS} FROM prefetch WHERE target = ?", (target,)).fetchone()), True

    def listing(self, limit: int = 1000) -> list[QueuedPrefetch]:
        rows = self.index.read().execute(f"SELECT {_COLS} FROM prefetch ORDER BY id LIMIT ?", (limit,)).fetchall()
        return [_item(r) for r in rows]

    def length(self) -> int:
        return self.index.read().execute("SELECT COUNT(*) FROM prefetch").fetchone()[0]

    def claim(self, pid: int, now: float, limit: int, dead: Iterable[int]) -> list[QueuedPrefetch]:
        """Up to ``limit`` due items nobody alive works on, now owned by ``pid``."""
        dead = list(dead)
        with self.index.write() as c:
            if dead:
                c.executemany("UPDATE prefetch SET owner = NULL WHERE owner = ?", [(p,) for p in dead])
            rows = c.execute(f"SELECT {_COLS} FROM prefetch WHERE owner IS NULL AND not_before <= ? ORDER BY id "
                             f"LIMIT ?", (now, limit)).fetchall()
            c.executemany("UPDATE prefetch SET owner = ? WHERE id = ?", [(pid, r[0]) for r in rows])
        return [_item(r) for r in rows]

    def owners(self) -> list[int]:
        return [r[0] for r in self.index.read().execute("SELECT DISTINCT owner FROM prefetch WHERE owner IS NOT NULL")]

    def done(self, item_id: int) -> None:
        with self.index.write() as c:
            c.execute("DELETE FROM prefetch WHERE id = ?", (item_id,))

    def failed(self, item_id: int, error: str, not_before: float) -> None:
        with self.index.write() as c:
            c.execute("UPDATE prefetch SET owner = NULL, attempts = attempts + 1, last_error = ?, not_before = ? "
                      "WHERE id = ?", (error[:500], not_before, item_id))

    def release(self, pid: int) -> None:
        with self.index.write() as c:
            c.execute("UPDATE prefetch SET owner = NULL WHERE owner = ?", (pid,))

    def clear(self) -> int:
        with self.index.write() as c:
            return c.execute("DELETE FROM prefetch").rowcount
