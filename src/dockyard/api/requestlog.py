"""The request log: one line per HTTP request, written when the request ends.

Fields: ``id`` (also sent back as the ``X-Request-Id`` header; a well-formed ``X-Request-Id``
from the client or its proxy is kept, anything else is replaced by a new one), ``method``,
``path`` (percent-encoded, no query), ``status``, ``bytes`` (response body bytes sent),
``ms`` (from the request's arrival to its last byte), ``user`` (``-`` when anonymous) and
``client`` (the peer address). The message is ``request``; with ``log_format = "text"`` the
fields follow it as ``key=value`` pairs, with ``"json"`` they are keys of the line's JSON object
(see :mod:`dockyard.logsetup`).

A plain ASGI wrapper around the whole application (outside Starlette's error middleware), so a
500 is logged with the status the client got, and a client that went away mid-response with the
bytes it was sent and status 499 if no response had started.

The same wrapper records the HTTP metrics (:mod:`dockyard.metrics`) from the same values:
requests and their duration by method, route template (``/v2/{name}/blobs/{digest}``, never
the raw path: one series per route, whatever the clients send; ``(unmatched)`` when no
route matched) and status; body bytes received and sent; requests in flight.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import time
from urllib.parse import quote

from dockyard.logsetup import block_handler, log_fields

log = logging.getLogger("dockyard.access")
_CLIENT_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
LINES_HELD = 256  # request lines held for the end of the event loop's turn at most (then written at once)
SERIES_CACHE = 4096  # (method, route, status) series whose metric samples a RequestLog keeps bound


METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "(unmatched)"


def route_templates(app, prefix: str = "") -> dict:
    """endpoint -> its route's path template (``{name:path}`` shown as ``{name}``); the first
    route of an endpoint names it (``/blobs/uploads/`` and ``/blobs/uploads`` are one). Routes
    under a Mount (the dashboard) count with the mount's prefix."""
    templates: dict = {}
    for route in getattr(app, "routes", ()):
        endpoint = getattr(route, "endpoint", None)
        path = prefix + getattr(route, "path", "")
        if endpoint is not None:
            templates.setdefault(endpoint, re.sub(r"\{(\w+):\w+\}", r"{\1}", path))
        elif getattr(route, "routes", None):  # a Mount
            for inner, template in route_templates(route, path).items():
                templates.setdefault(inner, template)
    return templates


class RequestLog:
    def __init__(self, app, metrics=None):
        self.app = app
        self.metrics = metrics
        self.templates = route_templates(app)
        # request ids: 16 random hex digits per RequestLog (one per worker process) + a counter,
        # 32 hex digits like the uuid4 hex they replace, without a uuid object per request
        self._id_prefix = os.urandom(8).hex()
        self._ids = itertools.count(1)
        self._series: dict[tuple, object] = {}  # -> bound samples (:meth:`_bound`, :meth:`_bytes`)
        self._in_flight = metrics.child("dockyard_http_requests_in_flight", "gauge") if metrics else None
        self._lines: list[dict] = []  # request lines written at the end of this turn of the event loop

    def _line(self, fields: dict) -> None:
        """The request's line. Where it goes to :func:`dockyard.logsetup.setup`'s handler alone
        (``dockyard serve``), it is written with the others that end in the same turn of the
        event loop, in one write (:func:`dockyard.logsetup.log_fields`) right after that turn;
        anywhere else (a test's capture, an embedding application's handlers) a record at once."""
        if not self._lines:
            if not log.isEnabledFor(logging.INFO):
                return
            if block_handler(log, logging.INFO) is None:
                log.info("request", extra={"fields": fields})
                return
            try:
                asyncio.get_running_loop().call_soon(self._write_lines)
            except RuntimeError:  # no running loop: at once
                log_fields(log, logging.INFO, "request", [fields])
                return
        self._lines.append(fields)
        if len(self._lines) >= LINES_HELD:  # a flush that never ran (a loop closed early): not held for ever
            self._write_lines()

    def _write_lines(self) -> None:
        lines, self._lines = self._lines, []
        log_fields(log, logging.INFO, "request", lines)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        request_id = ""
        for key, value in scope.get("headers", ()):
            if key == b"x-request-id" and _CLIENT_ID.fullmatch(value):
                request_id = value.decode("ascii")
        request_id = request_id or f"{self._id_prefix}{next(self._ids) & 0xFFFFFFFFFFFFFFFF:016x}"
        status, sent, received = 0, 0, 0
        metrics = self.metrics
        if metrics is not None:
            self._in_flight.inc()

        async def receive_counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def send_logged(message):
            nonlocal status, sent
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()),
                                                  (b"x-request-id", request_id.encode("ascii"))]}
            elif kind == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive_counted if metrics is not None else receive, send_logged)
        except BaseException:
            status = status or 499  # the error middleware answers 500 before re-raising; nothing sent = gone
            raise
        finally:
            identity = scope.get("state", {}).get("identity")
            client = scope.get("client")
            fields = {
                "id": request_id,
                "method": scope["method"],
                "path": quote(scope["path"], safe="/:@!$&'()*+,;=-._~"),
                "status": status,
                "bytes": sent,
                "ms": round((time.perf_counter() - started) * 1000, 1),
                "user": getattr(identity, "user", None) or "-",
                "client": client[0] if client else "-",
            }
            self._line(fields)
            if metrics is not None:
                self._record(metrics, scope, status, fields["ms"] / 1000, received, sent)

    def _bound(self, metrics, method: str, route: str, status: int) -> tuple:
        """The samples one request records into, bound once per (method, route, status): a
        ``.labels()`` lookup per metric per request is most of the cost of recording it."""
        key = (method, route, status)
        bound = self._series.get(key)
        if bound is None:
            if len(self._series) >= SERIES_CACHE:
                self._series.clear()
            labels = {"method": method, "route": route, "status": str(status)}
            bound = self._series[key] = (
                metrics.child("dockyard_http_requests_total", "counter", **labels),
                metrics.child("dockyard_http_request_duration_seconds", "histogram", **labels),
            )
        return bound

    def _bytes(self, metrics, name: str, method: str, route: str):
        """A byte counter's sample, bound on the first request that moved bytes (a series
        appears only once it has counted something, as with ``metrics.inc``)."""
        key = (name, method, route, 0)
        child = self._series.get(key)
        if child is None:
            child = self._series[key] = metrics.child(name, "counter", method=method, route=route)
        return child

    def _record(self, metrics, scope, status: int, seconds: float, received: int, sent: int) -> None:
        method = scope["method"] if scope["method"] in METHODS else "other"
        endpoint = scope.get("endpoint")
        try:
            route = self.templates.get(endpoint, UNMATCHED)
        except TypeError:  # an unhashable endpoint (a mounted app answered): not a route of ours
            route = UNMATCHED
        requests, duration = self._bound(metrics, method, route, status)
        self._in_flight.dec()
        requests.inc()
        duration.observe(seconds)
        if received:
            self._bytes(metrics, "dockyard_http_received_bytes_total", method, route).inc(received)
        if sent:
            self._bytes(metrics, "dockyard_http_sent_bytes_total", method, route).inc(sent)
