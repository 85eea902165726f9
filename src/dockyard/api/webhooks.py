"""Delivery of the events outbox to the notification endpoints (outgoing HTTP).

One runner per endpoint inside ``dockyard serve``, so an endpoint that is down delays only
itself, never a request (requests only write the outbox) nor another endpoint. A run leases
the endpoint's cursor (SKIP LOCKED on PostgreSQL: with several replicas one delivers to an
endpoint at a time), POSTs the events past the cursor in order, one at a time, and moves the
cursor after each answer 2xx. A failure keeps the cursor where it is and retries after an
exponential backoff, so delivery is at least once and in order (per repository and overall);
an event is sent twice only when a replica dies, or loses its lease, between a delivery and
the cursor's move. A trim job keeps the outbox bounded (``events_max``): events removed
before an endpoint got them are counted (``dockyard_events_dropped_total``) and logged.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid

import httpx

from dockyard import events
from dockyard.events import Endpoint
from dockyard.lifecycle.runner import Runner
from dockyard.meta.events import EventStore
from dockyard.report import Report, timed

log = logging.getLogger(__name__)
BATCH = 100
MAX_PER_RUN = 2000


class Delivery:
    """One endpoint's deliveries: ``deliver()`` sends what is due and returns how many it sent
    (``run()``, the job, reports it)."""

    job = "events"

    def __init__(self, reg, endpoint: Endpoint, owner: str | None = None,
                 transport: httpx.BaseTransport | None = None):
        self.reg, self.endpoint = reg, endpoint
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease = endpoint.timeout * 4 + 30.0
        self.client = httpx.Client(timeout=endpoint.timeout, transport=transport)

    def backoff(self, attempts: int) -> float:
        return min(self.reg.config.notifications_backoff_max, 0.5 * 2 ** min(attempts, 20))

    def run(self) -> Report:
        with timed(Report(self.job, kinds={})) as report:
            report.count(f"delivered to {self.endpoint.name}", self.deliver())
        return report

    def deliver(self) -> int:
        """Send what is due to this endpoint, in order; how many events it sent."""
        reg, name = self.reg, self.endpoint.name
        with reg.db.write() as conn:
            store = EventStore(conn)
            store.ensure_cursor(name)
            cursor = store.claim(name, self.owner, reg.now(), self.lease)
        if cursor is None:
            return 0
        sent, position = 0, cursor.position
        try:
            while sent < MAX_PER_RUN:
                with reg.db.read() as conn:
                    batch = EventStore(conn).after(position, BATCH)
                if not batch:
                    break
                for event in batch:
                    if self.endpoint.wants(event.kind):
                        error = self._post(event)
                        if error is not None:
                            self._failed(cursor.attempts, position, error)
                            return sent
                        sent += 1
                        if not self._advance(event.position, 1):
                            return sent
                    position = event.position
                if not self._advance(position, 0):
                    return sent
        finally:
            with reg.db.write() as conn:
                EventStore(conn).release(name, self.owner)
        return sent

    def _post(self, event) -> str | None:
        data = events.body(event.id, event.kind, event.repository, event.actor, event.at, event.payload)
        headers = {"Content-Type": "application/json", "X-Dockyard-Event": event.kind,
                   "X-Dockyard-Delivery": str(event.id)}
        if self.endpoint.secret:
            headers[events.SIGNATURE_HEADER] = events.sign(self.endpoint.secret, data)
        try:
            resp = self.client.post(self.endpoint.url, content=data, headers=headers)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if resp.status_code // 100 != 2:
            return f"HTTP {resp.status_code}"
        self.reg.metrics.inc("dockyard_events_delivered_total", endpoint=self.endpoint.name)
        return None

    def _advance(self, position: tuple[int, int], delivered: int) -> bool:
        with self.reg.db.write() as conn:
            return EventStore(conn).advance(self.endpoint.name, self.owner, position, delivered, self.reg.now(),
                                            self.lease)

    def _failed(self, attempts: int, position: tuple[int, int], error: str) -> None:
        delay = self.backoff(attempts)
        self.reg.metrics.inc("dockyard_events_delivery_failures_total", endpoint=self.endpoint.name)
        log.warning("notifications %s: delivery failed (%s); retrying in %.1fs (attempt %d)", self.endpoint.name,
                    error, delay, attempts + 1)
        with self.reg.db.write() as conn:
            EventStore(conn).failed(self.endpoint.name, self.owner, position, error, self.reg.now() + delay)

    def close(self) -> None:
        self.client.close()


class Trim:
    """Keeps the outbox to ``events_max`` events; what an endpoint lost is counted and logged."""

    job = "events-trim"

    def __init__(self, reg):
        self.reg = reg

    def run(self) -> Report:
        with timed(Report(self.job, kinds={})) as report, self.reg.db.write() as conn:
            dropped = EventStore(conn).trim(self.reg.config.events_max)
        for name, n in dropped.items():
            report.count(f"dropped for {name}", n)
            self.reg.metrics.inc("dockyard_events_dropped_total", n, endpoint=name)
            log.warning("notifications %s: %d undelivered events dropped (outbox bound events_max=%d)", name, n,
                        self.reg.config.events_max)
        return report


def runners(reg) -> list[Runner]:
    """The delivery runners of ``dockyard serve``: one per endpoint, and the outbox trim."""
    cfg = reg.config
    out = [Runner("events-trim", lambda: Trim(reg), 10.0)]
    for endpoint in cfg.notifications.values():
        delivery = Delivery(reg, endpoint)
        out.append(Runner(f"notify-{endpoint.name}", lambda d=delivery: d, cfg.notifications_interval, jitter=0.0))
    return out


def listing(reg, limit: int = 100, kind: str | None = None, repository: str | None = None) -> dict:
    """Recent events, newest first, each with its delivery state per configured endpoint,
    and every endpoint's cursor state (delivered, dropped, retries, last error)."""
    with reg.db.read() as conn:
        store = EventStore(conn)
        recent = store.recent(limit, kind, repository)
        cursors = store.cursors()
        total = store.count()
    endpoints = reg.config.notifications
    wanted = {name: e.wants for name, e in endpoints.items()}
    return {
        "events": store.describe(recent, cursors, wanted),
        "outbox": total,
        "endpoints": {name: {"url": e.url, "events": list(e.events),
                             **({k: getattr(c, k) for k in ("delivered", "dropped", "attempts", "next_attempt_at",
                                                             "last_error", "last_delivered_at")}
                                if (c := cursors.get(name)) else {"delivered": 0, "dropped": 0})}
                      for name, e in endpoints.items()},
    }
