"""ReplicaStore: the replicas whose blob cache an admin call fans out to."""

from __future__ import annotations

from sqlalchemy import Connection, delete, select, update

from dockyard.meta.db import insert_ignore
from dockyard.meta.schema import cache_replicas as t


class ReplicaStore:
    def __init__(self, conn: Connection):
        self.conn = conn

    def heartbeat(self, address: str, now: float) -> None:
        if not self.conn.execute(update(t).where(t.c.address == address).values(seen_at=now)).rowcount:
            insert_ignore(self.conn, t, {"address": address, "seen_at": now})

    def live(self, since: float) -> list[str]:
        return list(self.conn.execute(select(t.c.address).where(t.c.seen_at >= since).order_by(t.c.address)).scalars())

    def forget(self, address: str) -> None:
        self.conn.execute(delete(t).where(t.c.address == address))

    def forget_older(self, before: float) -> int:
        return self.conn.execute(delete(t).where(t.c.seen_at < before)).rowcount
