"""ReplicaStore: the replicas whose blob cache an admin call fans out to."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import Connection, delete, select, update

from dockyard.meta.db import insert_ignore
from dockyard.meta.schema import cache_replicas as t


@dataclass(frozen=True, slots=True)
class Replica:
    address: str
    seen_at: float
    stats: dict


class ReplicaStore:
    def __init__(self, conn: Connection):
        self.conn = conn

    def heartbeat(self, address: str, now: float, stats: dict | None = None) -> None:
        values = {"seen_at": now, **({"stats": json.dumps(stats)} if stats is not None else {})}
        if not self.conn.execute(update(t).where(t.c.address == address).values(**values)).rowcount:
            insert_ignore(self.conn, t, {"address": address, **values})

    def replicas(self, since: float) -> list[Replica]:
        """Replicas seen since ``since`` with the cache figures of their last heartbeat."""
        rows = self.conn.execute(select(t.c.address, t.c.seen_at, t.c.stats).where(t.c.seen_at >= since)
                                 .order_by(t.c.address))
        return [Replica(r.address, r.seen_at, json.loads(r.stats) if r.stats else {}) for r in rows]

    def live(self, since: float) -> list[str]:
        return list(self.conn.execute(select(t.c.address).where(t.c.seen_at >= since).order_by(t.c.address)).scalars())

    def forget(self, address: str) -> None:
        self.conn.execute(delete(t).where(t.c.address == address))

    def forget_older(self, before: float) -> int:
        return self.conn.execute(delete(t).where(t.c.seen_at < before)).rowcount
