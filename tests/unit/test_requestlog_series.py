"""The request log records its metrics into samples bound once per (method, route, status)."""

from __future__ import annotations

import asyncio
import re

from dockyard.api.requestlog import RequestLog
from dockyard.metrics import Metrics


async def _app(scope, receive, send):
    status = 404 if scope["path"] == "/missing" else 200
    body = b"" if scope["method"] == "HEAD" else b"hello"
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body})


def _call(wrapped, method, path):
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(wrapped({"type": "http", "method": method, "path": path, "headers": [], "client": ("127.0.0.1", 1)},
                        receive, send))
    return dict(sent[0]["headers"])[b"x-request-id"].decode()


def test_series_by_status_and_method_with_cached_samples():
    metrics = Metrics()
    wrapped = RequestLog(_app, metrics)
    ids = {_call(wrapped, "GET", "/x") for _ in range(3)}
    ids.add(_call(wrapped, "GET", "/missing"))
    ids.add(_call(wrapped, "HEAD", "/x"))
    assert len(ids) == 5 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    total = "dockyard_http_requests_total"
    assert metrics.get(total, method="GET", route="(unmatched)", status="200") == 3
    assert metrics.get(total, method="GET", route="(unmatched)", status="404") == 1
    assert metrics.get(total, method="HEAD", route="(unmatched)", status="200") == 1
    assert metrics.get("dockyard_http_request_duration_seconds_count", method="GET", route="(unmatched)",
                       status="200") == 3
    assert metrics.get("dockyard_http_sent_bytes_total", method="GET", route="(unmatched)") == 20
    assert metrics.get("dockyard_http_requests_in_flight") == 0
    # a series appears only once it counted something: no sent-bytes series for HEAD (no body)
    assert b'dockyard_http_sent_bytes_total{method="HEAD"' not in metrics.render()
