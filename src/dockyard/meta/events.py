"""EventStore: the events outbox and the notification endpoints' cursors over it.

``record`` runs inside the transaction of the change it describes (one INSERT). Delivery
order is (txid, id): on PostgreSQL ``txid`` is the writing transaction's id and a cursor
only moves past transactions older than every one still running (the snapshot's xmin), so
an event that commits late, from a transaction that began early, cannot fall behind a
cursor; on SQLite (one writer) ids are in commit order and ``txid`` is 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, literal, or_, select, update

from dockyard.meta.db import driver_execute, insert_ignore, on_driver
from dockyard.meta.schema import event_endpoints, event_outbox

# ``record`` on SQLite's driver (``driver_execute``: every manifest push writes one, in the writer's turn)
_SQLITE_RECORD = "INSERT INTO event_outbox (txid, at, kind, repository, actor, payload) VALUES (0, ?, ?, ?, ?, ?)"
_AFTER_ALL = 2 ** 62  # an id beyond any: the cursor of a new endpoint sits after the last visible txid


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    txid: int
    at: float
    kind: str
    repository: str | None
    actor: str | None
    payload: dict

    @property
    def position(self) -> tuple[int, int]:
        return (self.txid, self.id)


@dataclass(frozen=True, slots=True)
class Cursor:
    name: str
    position: tuple[int, int]
    delivered: int
    dropped: int
    attempts: int
    next_attempt_at: float
    last_error: str | None
    last_delivered_at: float | None
    lease_owner: str | None
    lease_until: float | None


def _event(row) -> Event:
    return Event(row.id, row.txid, row.at, row.kind, row.repository, row.actor, json.loads(row.payload))


def _cursor(row) -> Cursor:
    return Cursor(row.name, (row.last_txid, row.last_id), row.delivered, row.dropped, row.attempts,
                  row.next_attempt_at, row.last_error, row.last_delivered_at, row.lease_owner, row.lease_until)


def _after(txid: int, event_id: int):
    c = event_outbox.c
    return or_(c.txid > txid, and_(c.txid == txid, c.id > event_id))


class EventStore:
    def __init__(self, conn: Connection):
        self.conn = conn
        self.pg = conn.dialect.name == "postgresql"

    def _txid(self):
        return func.txid_current() if self.pg else literal(0)

    def _horizon(self):
        """Transactions below this id have all ended (PostgreSQL); None on SQLite."""
        return func.txid_snapshot_xmin(func.txid_current_snapshot()) if self.pg else None

    # ---- writing (inside the change's transaction) -------------------------------------
    def record(self, kind: str, repository: str | None, payload: dict, now: float, actor: str | None = None) -> None:
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        if on_driver(self.conn):
            driver_execute(self.conn, _SQLITE_RECORD, (now, kind, repository, actor, text))
            return
        self.conn.execute(insert(event_outbox).values(
            txid=self._txid(), at=now, kind=kind, repository=repository, actor=actor, payload=text))

    # ---- reading -------------------------------------------------------------------------
    def recent(self, limit: int, kind: str | tuple[str, ...] | None = None,
               repository: str | None = None) -> list[Event]:
        q = select(event_outbox).order_by(event_outbox.c.id.desc()).limit(limit)
        if isinstance(kind, tuple):
            q = q.where(event_outbox.c.kind.in_(kind))
        elif kind:
            q = q.where(event_outbox.c.kind == kind)
        if repository:
            q = q.where(event_outbox.c.repository == repository)
        return [_event(r) for r in self.conn.execute(q)]

    def count(self) -> int:
        return self.conn.execute(select(func.count()).select_from(event_outbox)).scalar() or 0

    def after(self, position: tuple[int, int], limit: int) -> list[Event]:
        """Events past ``position`` that no running transaction can precede, in delivery order."""
        c = event_outbox.c
        q = select(event_outbox).where(_after(*position))
        horizon = self._horizon()
        if horizon is not None:
            q = q.where(c.txid < horizon)
        return [_event(r) for r in self.conn.execute(q.order_by(c.txid, c.id).limit(limit))]

    # ---- endpoints -------------------------------------------------------------------------
    def cursors(self) -> dict[str, Cursor]:
        return {r.name: _cursor(r) for r in self.conn.execute(select(event_endpoints))}

    def ensure_cursor(self, name: str) -> None:
        """A new endpoint starts after the events that exist now (no flood of old ones)."""
        if self.conn.execute(select(event_endpoints.c.name).where(event_endpoints.c.name == name)).first():
            return
        if self.pg:
            horizon = self.conn.execute(select(self._horizon())).scalar()
            position = (int(horizon) - 1, _AFTER_ALL)
        else:
            position = (0, self.conn.execute(select(func.max(event_outbox.c.id))).scalar() or 0)
        insert_ignore(self.conn, event_endpoints, {
            "name": name, "last_txid": position[0], "last_id": position[1], "delivered": 0, "dropped": 0,
            "attempts": 0, "next_attempt_at": 0.0})

    def claim(self, name: str, owner: str, now: float, lease: float) -> Cursor | None:
        """The endpoint's cursor, leased to ``owner`` (None: another replica delivers to it
        now, or its next retry is not due). The row is taken with SKIP LOCKED on PostgreSQL."""
        q = select(event_endpoints).where(event_endpoints.c.name == name)
        if self.pg:
            q = q.with_for_update(skip_locked=True)
        row = self.conn.execute(q).first()
        if row is None or row.next_attempt_at > now:
            return None
        if row.lease_owner not in (None, owner) and (row.lease_until or 0) > now:
            return None
        self.conn.execute(update(event_endpoints).where(event_endpoints.c.name == name)
                          .values(lease_owner=owner, lease_until=now + lease))
        return _cursor(row)

    def _mine(self, name: str, owner: str):
        return update(event_endpoints).where(event_endpoints.c.name == name, event_endpoints.c.lease_owner == owner)

    def advance(self, name: str, owner: str, position: tuple[int, int], delivered: int, now: float,
                lease: float) -> bool:
        """Move the cursor and renew the lease (only while ``owner`` holds it); False if it lost it."""
        res = self.conn.execute(self._mine(name, owner).values(lease_until=now + lease,
            last_txid=position[0], last_id=position[1], delivered=event_endpoints.c.delivered + delivered,
            attempts=0, next_attempt_at=0.0, last_error=None,
            last_delivered_at=now if delivered else event_endpoints.c.last_delivered_at))
        return res.rowcount > 0

    def failed(self, name: str, owner: str, position: tuple[int, int], error: str, retry_at: float) -> None:
        """The event after ``position`` was not delivered: try again at ``retry_at``."""
        self.conn.execute(self._mine(name, owner).values(last_txid=position[0], last_id=position[1],
            attempts=event_endpoints.c.attempts + 1, next_attempt_at=retry_at, last_error=error[:500]))

    def release(self, name: str, owner: str) -> None:
        self.conn.execute(self._mine(name, owner).values(lease_owner=None, lease_until=None))

    # ---- the bound -----------------------------------------------------------------------
    def trim(self, keep: int) -> dict[str, int]:
        """Keep the newest ``keep`` events; returns, per endpoint, how many of the removed
        ones it had not been sent yet (dropped, counted on its row)."""
        c = event_outbox.c
        cutoff = self.conn.execute(select(c.id).order_by(c.id.desc()).offset(keep).limit(1)).scalar()
        if cutoff is None:
            return {}
        dropped: dict[str, int] = {}
        for cur in self.cursors().values():
            n = self.conn.execute(select(func.count()).select_from(event_outbox)
                                  .where(c.id <= cutoff, _after(*cur.position))).scalar() or 0
            if n:
                dropped[cur.name] = n
                self.conn.execute(update(event_endpoints).where(event_endpoints.c.name == cur.name)
                                  .values(dropped=event_endpoints.c.dropped + n))
        self.conn.execute(delete(event_outbox).where(c.id <= cutoff))
        return dropped

    def describe(self, events: list[Event], cursors: dict[str, Cursor], wanted: dict[str, Any]) -> list[dict]:
        """Each event as a dict with its delivery state per endpoint (``wanted``: endpoint ->
        predicate on kind): delivered, pending, or not subscribed."""
        out = []
        for e in events:
            state = {}
            for name, wants in wanted.items():
                cur = cursors.get(name)
                if not wants(e.kind):
                    state[name] = "not subscribed"
                elif cur is not None and e.position <= cur.position:
                    state[name] = "delivered"
                else:
                    state[name] = "pending"
            out.append({"id": e.id, "at": e.at, "kind": e.kind, "repository": e.repository, "actor": e.actor,
                        **e.payload, "deliveries": state})
        return out
