"""TombstoneStore: storage objects whose rows are gone and whose data the collector deletes.

A tombstone is written in the transaction that removed the last row naming the data; the collector
claims it (a lease), deletes the data, and drops it. A push that needs a digest again cancels an idle
tombstone or waits for a busy one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, delete, exists, select, update

from dockyard.meta.db import (
    cached_statement,
    dialect_insert,
    driver_execute,
    insert_ignore,
    on_driver,
)
from dockyard.meta.schema import gc_tombstones


@dataclass(frozen=True, slots=True)
class Tombstone:
    key: str
    kind: str
    digest: str | None
    size: int
    attempts: int


# the push path's statement, built once
_TOMBSTONE_OF = (select(gc_tombstones.c.key, gc_tombstones.c.lease_owner, gc_tombstones.c.next_attempt_at)
                 .where(gc_tombstones.c.digest == bindparam("digest")).with_for_update())
# the same on SQLite's driver (``driver_execute``: every new blob's commit runs it in the writer's turn)
_SQLITE_TOMBSTONE_OF = "SELECT \"key\", lease_owner, next_attempt_at FROM gc_tombstones WHERE digest = ?"

# the collector's statements, built once
_KEYS = bindparam("keys", expanding=True)
_CLAIM = (select(gc_tombstones.c.key, gc_tombstones.c.kind, gc_tombstones.c.digest, gc_tombstones.c.size,
                 gc_tombstones.c.attempts)
          .where(gc_tombstones.c.next_attempt_at <= bindparam("now")).order_by(gc_tombstones.c.next_attempt_at)
          .limit(bindparam("limit")).with_for_update(skip_locked=True))
_LEASE = (update(gc_tombstones).where(gc_tombstones.c.key.in_(_KEYS))
          .values(next_attempt_at=bindparam("until"), lease_owner=bindparam("owner")))
_DROP = delete(gc_tombstones).where(gc_tombstones.c.key.in_(_KEYS))
# SQLite: the same on the driver's connection (driver_execute), a batch as one JSON array
_DROP_SQLITE = "DELETE FROM gc_tombstones WHERE key IN (SELECT value FROM json_each(?))"
_ADD_LEASED_SQLITE = (
    "INSERT INTO gc_tombstones (key, kind, digest, size, created_at, next_attempt_at, attempts, last_error, "
    "lease_owner) SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'), "
    "json_extract(value, '$[3]'), json_extract(value, '$[4]'), ?, 0, NULL, ? "
    "FROM json_each(?) WHERE true ON CONFLICT DO NOTHING RETURNING key")


class TombstoneStore:
    """Tombstones: add, claim under a lease, drop when the data is gone, retry on failure."""

    def __init__(self, conn: Connection):
        self.conn = conn

    def add(self, rows: list[dict]) -> None:
        if rows:
            dialect = self.conn.dialect.name
            stmt = cached_statement(("tombstones.add", dialect),
                                    lambda: dialect_insert(dialect, gc_tombstones).on_conflict_do_nothing())
            self.conn.execute(stmt, [{"lease_owner": None, "attempts": 0, "last_error": None, **r} for r in rows])

    def add_leased(self, rows: list[dict], owner: str, until: float) -> list[Tombstone]:
        """:meth:`add`, each new tombstone already claimed by ``owner`` until ``until`` (what
        :meth:`claim` would make of it, without claiming it): the collector that removes the
        rows deletes their data next. Returns the tombstones this call wrote (a key that has
        one already keeps it, and its own claim)."""
        if not rows:
            return []
        if on_driver(self.conn):
            batch = json.dumps([[r["key"], r["kind"], r["digest"], r["size"], r["created_at"]] for r in rows])
            written = {k[0] for k in driver_execute(self.conn, _ADD_LEASED_SQLITE, (until, owner, batch))}
            return [Tombstone(r["key"], r["kind"], r["digest"], r["size"], 0) for r in rows if r["key"] in written]
        values = [{**r, "lease_owner": owner, "next_attempt_at": until, "attempts": 0, "last_error": None}
                  for r in rows]
        written = {k[0] for k in insert_ignore(self.conn, gc_tombstones, values)}
        return [Tombstone(r["key"], r["kind"], r["digest"], r["size"], 0) for r in rows if r["key"] in written]

    def exists_for(self, digest: str) -> bool:
        return bool(self.conn.execute(select(exists().where(gc_tombstones.c.digest == digest))).scalar())

    def cancel_idle(self, digest: str, now: float) -> str:
        """For a push that needs ``digest`` again: "none" if no tombstone exists; "cancelled"
        if one existed but no collector was deleting its data (never claimed, waiting for a
        retry, or its lease has expired), so the data is kept; "busy" if a collector holds a
        live lease on it (the push must wait for the delete to finish)."""
        if on_driver(self.conn):
            cur = driver_execute(self.conn, _SQLITE_TOMBSTONE_OF, (digest,))
            row = cur.fetchone()
            cur.close()
        else:
            row = self.conn.execute(_TOMBSTONE_OF, {"digest": digest}).first()
        if row is None:
            return "none"
        key, lease_owner, next_attempt_at = row
        if lease_owner is not None and next_attempt_at > now:
            return "busy"
        self.conn.execute(delete(gc_tombstones).where(gc_tombstones.c.key == key))
        return "cancelled"

    def claim(self, now: float, limit: int, owner: str, lease: float) -> list[Tombstone]:
        rows = self.conn.execute(_CLAIM, {"now": now, "limit": limit}).all()
        if rows:
            self.conn.execute(_LEASE, {"keys": [r[0] for r in rows], "until": now + lease, "owner": owner})
        return [Tombstone(*r) for r in rows]

    def release_leases_of_dead(self, host: str, alive, now: float) -> int:
        """Leases on tombstones held by processes of this host that no longer exist are
        released at once (other hosts' leases simply expire)."""
        rows = self.conn.execute(select(gc_tombstones.c.key, gc_tombstones.c.lease_owner).where(
            gc_tombstones.c.lease_owner.like(f"{host}:%"), gc_tombstones.c.next_attempt_at > now))
        dead = [r.key for r in rows if not alive(r.lease_owner)]
        if dead:
            self.conn.execute(update(gc_tombstones).where(gc_tombstones.c.key.in_(dead))
                              .values(lease_owner=None, next_attempt_at=now))
        return len(dead)

    def pending(self, limit: int) -> list[Tombstone]:
        rows = self.conn.execute(select(gc_tombstones.c.key, gc_tombstones.c.kind, gc_tombstones.c.digest,
                                        gc_tombstones.c.size, gc_tombstones.c.attempts).limit(limit))
        return [Tombstone(r.key, r.kind, r.digest, r.size, r.attempts) for r in rows]

    def drop(self, keys: list[str], chunk: int = 500) -> None:
        if keys and on_driver(self.conn):
            driver_execute(self.conn, _DROP_SQLITE, (json.dumps(keys),))
            return
        for i in range(0, len(keys), chunk):
            self.conn.execute(_DROP, {"keys": keys[i:i + chunk]})

    def failed(self, key: str, error: str, retry_at: float) -> None:
        self.conn.execute(update(gc_tombstones).where(gc_tombstones.c.key == key).values(
            attempts=gc_tombstones.c.attempts + 1, last_error=error[:2000], next_attempt_at=retry_at,
            lease_owner=None))

    def existing_keys(self, keys: list[str]) -> set[str]:
        if not keys:
            return set()
        return set(self.conn.execute(select(gc_tombstones.c.key).where(gc_tombstones.c.key.in_(keys))).scalars())
