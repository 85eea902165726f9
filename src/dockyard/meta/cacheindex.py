"""CacheIndex: the one source of truth of a replica's blob cache (issue 11).

A small SQLite file inside ``cache_dir`` (the cache is per replica and must not depend on the
shared database). What is cached, how big it is, who reads it and what is queued lives here
and nowhere else; the files follow the index, never the other way round::

    entries(digest PK, size, state, created, last_used, hits, pinned, owner)
        state  filling   bytes reserved, a fill (process ``owner``) writes an incomplete file
               ready     the file is complete and verified: the only state ever served
               evicting  chosen for eviction: still counted until its file is gone
    reads(id PK, digest, pid, started)     a lease per open reader: never evicted under it
    prefetch(id PK, target UNIQUE, pin, queued, attempts, not_before, owner, last_error)

The sum of ``entries.size`` over every state is the space the cache may use on disk; a fill
reserves its bytes (inside one ``BEGIN IMMEDIATE``) before it writes any, so concurrent fills in
any number of threads or processes never take the directory past ``cache_max_size``.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from dockyard.lru import Entry

FILLING, READY, EVICTING = "filling", "ready", "evicting"
CacheIndexError = sqlite3.Error
"""What the index raises when its file fails (locked too long, disk full, corrupt)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    digest TEXT PRIMARY KEY, size INTEGER NOT NULL, state TEXT NOT NULL, created REAL NOT NULL,
    last_used REAL NOT NULL, hits INTEGER NOT NULL DEFAULT 0, pinned INTEGER NOT NULL DEFAULT 0,
    owner INTEGER);
CREATE INDEX IF NOT EXISTS entries_lru ON entries (last_used, digest);
CREATE TABLE IF NOT EXISTS reads (id INTEGER PRIMARY KEY, digest TEXT NOT NULL, pid INTEGER NOT NULL,
    started REAL NOT NULL);
CREATE INDEX IF NOT EXISTS reads_digest ON reads (digest);
CREATE TABLE IF NOT EXISTS prefetch (id INTEGER PRIMARY KEY, target TEXT NOT NULL UNIQUE,
    pin INTEGER NOT NULL DEFAULT 0, queued REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0, owner INTEGER, last_error TEXT);
CREATE TABLE IF NOT EXISTS stats (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_IN_USE = "EXISTS (SELECT 1 FROM reads r WHERE r.digest = e.digest)"


@dataclass(frozen=True, slots=True)
class CacheEntry:
    digest: str
    size: int
    state: str
    created: float
    last_used: float
    hits: int
    pinned: bool
    owner: int | None
    in_use: bool = False


@dataclass(frozen=True, slots=True)
class QueuedPrefetch:
    id: int
    target: str
    pin: bool
    queued: float
    attempts: int
    not_before: float
    owner: int | None
    last_error: str | None


def _entry(row) -> CacheEntry:
    return CacheEntry(row[0], row[1], row[2], row[3], row[4], row[5], bool(row[6]), row[7],
                      bool(row[8]) if len(row) > 8 else False)


_COLS = "e.digest, e.size, e.state, e.created, e.last_used, e.hits, e.pinned, e.owner"


class CacheIndex:
    """Thread-safe (one connection per thread); several processes may share the file (WAL)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        self._conn().executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL: a commit survives a process kill
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def read(self) -> sqlite3.Connection:
        return self._conn()  # autocommit: each SELECT sees a consistent snapshot

    # ---- counts (hits, misses, bytes by source) of every process of this replica ----------
    def add_stats(self, deltas: dict[str, int]) -> None:
        with self.write() as c:
            for name, n in deltas.items():
                if n:
                    c.execute("INSERT INTO stats (name, value) VALUES (?, ?) "
                              "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value", (name, n))

    def stats(self) -> dict[str, int]:
        return dict(self.read().execute("SELECT name, value FROM stats").fetchall())

    # ---- entries --------------------------------------------------------------------
    def get(self, digest: str) -> CacheEntry | None:
        row = self.read().execute(f"SELECT {_COLS}, {_IN_USE} FROM entries e WHERE digest = ?", (digest,)).fetchone()
        return _entry(row) if row else None

    def totals(self) -> tuple[int, int]:
        """(entries, bytes) over every state: the space the cache holds or has reserved."""
        n, total = self.read().execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM entries").fetchone()
        return n, total

    def begin_read(self, digest: str, size: int, pid: int, now: float) -> int | None:
        """A read lease on a ready entry of ``size`` bytes (counts a hit), or None."""
        with self.write() as c:
            cur = c.execute("UPDATE entries SET hits = hits + 1, last_used = ? WHERE digest = ? AND state = ? "
                            "AND size = ?", (now, digest, READY, size))
            if not cur.rowcount:
                return None
            return c.execute("INSERT INTO reads (digest, pid, started) VALUES (?, ?, ?)",
                             (digest, pid, now)).lastrowid

    def end_read(self, read_id: int, digest: str | None = None, hits: int = 0, last_used: float = 0.0) -> None:
        """Give a read lease back; with ``digest``, also count ``hits`` more reads of it that
        shared the lease, the last at ``last_used`` (one transaction)."""
        with self.write() as c:
            c.execute("DELETE FROM reads WHERE id = ?", (read_id,))
            if digest is not None and hits:
                c.execute("UPDATE entries SET hits = hits + ?, last_used = max(last_used, ?) WHERE digest = ?",
                          (hits, last_used, digest))

    def lru(self, c: sqlite3.Connection, after: tuple[float, str] | None = None,
            limit: int = -1) -> Iterator[Entry]:
        """Ready entries, least recently used first (streamed), as :class:`dockyard.lru.Entry`."""
        where, args = "state = ?", [READY]
        if after is not None:
            where += " AND (last_used, digest) > (?, ?)"
            args += list(after)
        cur = c.execute(f"SELECT e.digest, e.size, e.last_used, e.pinned, {_IN_USE} FROM entries e "
                        f"WHERE {where} ORDER BY last_used, digest LIMIT ?", (*args, limit))
        for d, size, used, pinned, in_use in cur:
            yield Entry(d, size, used, bool(pinned), bool(in_use))

    def lru_page(self, after: tuple[float, str] | None, limit: int) -> list[Entry]:
        """One page of :meth:`lru` read in one step of SQLite, as one JSON document (a step per
        row gives the GIL back and waits for it again each time: slow while threads unlink).
        Times travel as 17-digit text, so the page's last (last_used, digest) is exact."""
        where, args = "state = ?", [READY]
        if after is not None:
            where += " AND (last_used, digest) > (?, ?)"
            args += list(after)
        (doc,) = self.read().execute(
            f"SELECT json_group_array(json_array(digest, size, printf('%!.17g', last_used), pinned, in_use)) FROM "
            f"(SELECT e.digest, e.size, e.last_used, e.pinned, {_IN_USE} AS in_use FROM entries e WHERE {where} "
            f"ORDER BY last_used, digest LIMIT ?)", (*args, limit)).fetchone()
        page = [Entry(d, size, float(used), bool(pinned), bool(in_use)) for d, size, used, pinned, in_use
                in json.loads(doc)]
        page.sort(key=lambda e: (e.last_used, e.key))  # an aggregate's order is not promised
        return page

    def reserve(self, digest: str, size: int, pid: int, now: float, max_size: int, target: int,
                victims_fn) -> tuple[str, list[Entry]]:
        """Reserve ``size`` bytes for a fill of ``digest``.

        ``("reserved", [])`` when the row is written; ``("evict", victims)`` when victims were
        marked evicting first (the caller removes their files, calls :meth:`evicted` and asks
        again); ``("busy", [])`` when the digest is already filling or cached; ``("full", [])``
        when even evicting every unpinned, unused entry would not make room.
        """
        with self.write() as c:
            if c.execute("SELECT 1 FROM entries WHERE digest = ?", (digest,)).fetchone():
                return "busy", []
            (total,) = c.execute("SELECT COALESCE(SUM(size), 0) FROM entries").fetchone()
            if total + size <= max_size:
                c.execute("INSERT INTO entries (digest, size, state, created, last_used, owner) "
                          "VALUES (?, ?, ?, ?, ?, ?)", (digest, size, FILLING, now, now, pid))
                return "reserved", []
            chosen = list(victims_fn(self.lru(c), total, min(target, max_size - size)))
            if total - sum(v.size for v in chosen) + size > max_size:
                return "full", []
            self._mark(c, [v.key for v in chosen])
            return "evict", chosen

    def _mark(self, c: sqlite3.Connection, digests: list[str]) -> None:
        c.executemany(f"UPDATE entries SET state = '{EVICTING}' WHERE digest = ? AND state = '{READY}'",
                      [(d,) for d in digests])

    def mark_evicting(self, digests: Iterable[str], *, force_pinned: bool = True) -> list[CacheEntry]:
        """Mark ready entries that nobody reads (and, unless ``force_pinned``, not pinned) as
        evicting, in one statement; returns those marked."""
        keys = json.dumps(list(digests))
        pinned = "" if force_pinned else "AND pinned = 0"
        with self.write() as c:
            rows = c.execute(f"UPDATE entries SET state = '{EVICTING}' WHERE digest IN (SELECT value FROM "
                             f"json_each(?)) AND state = '{READY}' {pinned} AND NOT EXISTS (SELECT 1 FROM reads r "
                             f"WHERE r.digest = entries.digest) RETURNING {_COLS.replace('e.', '')}",
                             (keys,)).fetchall()
        return [_entry(r) for r in rows]

    def evicted(self, digests: Iterable[str]) -> None:
        with self.write() as c:
            c.execute(f"DELETE FROM entries WHERE digest IN (SELECT value FROM json_each(?)) AND state = '{EVICTING}'",
                      (json.dumps(list(digests)),))

    def known(self, digests: list[str]) -> set[str]:
        """Those of ``digests`` the index has an entry for (any state)."""
        rows = self.read().execute("SELECT digest FROM entries WHERE digest IN (SELECT value FROM json_each(?))",
                                   (json.dumps(digests),))
        return {r[0] for r in rows}

    def complete(self, digest: str, pid: int, now: float) -> bool:
        with self.write() as c:
            return bool(c.execute("UPDATE entries SET state = ?, last_used = ?, owner = NULL WHERE digest = ? "
                                  "AND state = ? AND owner = ?", (READY, now, digest, FILLING, pid)).rowcount)

    def abandon(self, digest: str, pid: int) -> None:
        with self.write() as c:
            c.execute("DELETE FROM entries WHERE digest = ? AND state = ? AND owner = ?", (digest, FILLING, pid))

    def drop(self, digest: str, state: str) -> bool:
        with self.write() as c:
            return bool(c.execute("DELETE FROM entries WHERE digest = ? AND state = ?", (digest, state)).rowcount)

    def set_pinned(self, digest: str, pinned: bool) -> bool:
        with self.write() as c:
            return bool(c.execute("UPDATE entries SET pinned = ? WHERE digest = ?", (int(pinned), digest)).rowcount)

    def page(self, after: str = "", limit: int = 1000) -> list[CacheEntry]:
        """Entries of every state in digest order, from after ``after``."""
        rows = self.read().execute(f"SELECT {_COLS}, {_IN_USE} FROM entries e WHERE digest > ? ORDER BY digest "
                                   f"LIMIT ?", (after, limit)).fetchall()
        return [_entry(r) for r in rows]

    def filling(self) -> list[CacheEntry]:
        rows = self.read().execute(f"SELECT {_COLS} FROM entries e WHERE state = ?", (FILLING,)).fetchall()
        return [_entry(r) for r in rows]

    # ---- read leases ------------------------------------------------------------------
    def reader_pids(self) -> list[int]:
        return [r[0] for r in self.read().execute("SELECT DISTINCT pid FROM reads")]

    def drop_reads_of(self, pids: Iterable[int]) -> int:
        with self.write() as c:
            return sum(c.execute("DELETE FROM reads WHERE pid = ?", (p,)).rowcount for p in pids)
