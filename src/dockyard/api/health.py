"""``/healthz`` and ``/readyz``: probes for orchestrators and load balancers.

Neither takes credentials, even with authentication configured (a probe has none), and
neither says more than which dependency failed (the reason goes to the log, once per change).

``GET /healthz``  the process answers: always ``200 {"status": "ok"}``.
``GET /readyz``   ``200`` when the database answers, its schema is at the newest migration and
                  storage answers a stat of a fixed key; otherwise ``503`` naming what failed::

                      {"status": "unready", "checks": {"database": "ok", "migrations": "ok",
                                                       "storage": "unreachable"}}

Cheap: the checks run at most once per :data:`CACHE_SECONDS` per process, one at a time, in
a thread of their own (never the request pool), and a check that hangs answers ``timeout``
after :data:`TIMEOUT_SECONDS` without starting a second one beside it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dockyard.registry.context import Registry

log = logging.getLogger(__name__)
PROBE_KEY = "health/probe"  # never written: a stat answering "no such object" proves storage answers
CACHE_SECONDS = 1.0
TIMEOUT_SECONDS = 3.0


def _database(registry: Registry) -> dict[str, str]:
    try:
        with registry.db.read():  # connect (PostgreSQL: pre-ping), BEGIN, COMMIT
            pass
    except Exception as exc:  # any failure means "not ready"; the reason is logged, not returned
        return {"database": f"unreachable: {getattr(exc, 'reason', None) or exc}"}
    # SELECT version_num FROM alembic_version: the trivial query, and the schema check
    return {"database": "ok", "migrations": "ok" if registry.db.at_head() else "not at head"}


def _storage(registry: Registry) -> dict[str, str]:
    try:
        registry.storage.stat(PROBE_KEY)
    except Exception as exc:
        return {"storage": f"unreachable: {exc}"}
    return {"storage": "ok"}


class Readiness:
    """The readiness checks of one process, cached and never run twice at once."""

    def __init__(self, registry: Registry, clock: Callable[[], float] = time.monotonic):
        self.registry = registry
        self.clock = clock
        self._pending: dict[str, asyncio.Future] = {}
        self._checks: dict[str, str] = {}
        self._at = -CACHE_SECONDS
        self._last_failed: dict[str, str] = {}

    async def checks(self) -> dict[str, str]:
        if self.clock() - self._at < CACHE_SECONDS:
            return self._checks
        loop = asyncio.get_running_loop()
        for name, probe in (("database", _database), ("storage", _storage)):
            if name not in self._pending or self._pending[name].done():
                # the loop's default executor: a hung probe never holds a request thread
                self._pending[name] = loop.run_in_executor(None, probe, self.registry)
        results: dict[str, str] = {}
        for name, future in self._pending.items():
            try:
                results.update(await asyncio.wait_for(asyncio.shield(future), TIMEOUT_SECONDS))
            except asyncio.TimeoutError:
                results[name] = f"timeout: no answer within {TIMEOUT_SECONDS:g} s"
        if "migrations" not in results and "database" in results:
            results["migrations"] = "unknown"
        self._log_changes(results)
        self._checks = {k: ("ok" if v == "ok" else v.split(":", 1)[0]) for k, v in results.items()}
        self._at = self.clock()
        return self._checks

    def _log_changes(self, results: dict[str, str]) -> None:
        failed = {k: v for k, v in results.items() if v != "ok"}
        if failed != self._last_failed:
            if failed:
                log.warning("not ready: %s", "; ".join(f"{k} {v}" for k, v in sorted(failed.items())))
            else:
                log.info("ready")
        self._last_failed = failed


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})


async def readyz(request: Request) -> Response:
    readiness: Readiness = request.app.state.readiness
    checks = await readiness.checks()
    ready = all(v == "ok" for v in checks.values())
    body = {"status": "ready" if ready else "unready", "checks": checks}
    if not ready:
        body["failed"] = sorted(k for k, v in checks.items() if v != "ok")
    return JSONResponse(body, status_code=200 if ready else 503, headers={"Cache-Control": "no-store"})
