"""LeaseStore: database leases with expiry, for jobs that must run in one replica at a time."""

from __future__ import annotations

from sqlalchemy import Connection, delete, update

from dockyard.meta.db import insert_ignore
from dockyard.meta.schema import leases


class LeaseStore:
    def __init__(self, conn: Connection):
        self.conn = conn

    def acquire(self, name: str, holder: str, now: float, ttl: float) -> bool:
        """Take or renew the lease; False while another holder's lease is live."""
        res = self.conn.execute(update(leases).where(
            leases.c.name == name, (leases.c.holder == holder) | (leases.c.expires_at < now)
        ).values(holder=holder, expires_at=now + ttl))
        if res.rowcount:
            return True
        return bool(insert_ignore(self.conn, leases, {"name": name, "holder": holder, "expires_at": now + ttl}))

    def release(self, name: str, holder: str) -> None:
        self.conn.execute(delete(leases).where(leases.c.name == name, leases.c.holder == holder))
