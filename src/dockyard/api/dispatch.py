"""The application: Starlette, with a shorter way to a route for the requests that find one.

Starlette sends every request through two error middlewares (each wrapping ``send`` and, the
inner one, building a ``Request``), then its router, which tries the routes one after another
(a regular expression and a ``dict`` per route: a blob is the fourteenth), then the route's
own wrapper (another ``Request``, another error wrapper). :class:`App` resolves a request's
route with one regular expression for its method (the routes' own expressions as alternatives
of one, in the routes' order: the first that matches is the route Starlette would pick) and
calls the handler under one error wrapper that does what those layers do together:

- a handled exception (``RegistryError``, ``StorageError``, ``HTTPException``) gets its
  handler's response, if no response has started; after one has, it is a ``RuntimeError`` as
  in Starlette;
- anything else goes to the ``Exception`` handler (the 500), which is sent if no response has
  started, and is raised again for the server (and the request log) to see.

Everything else goes through Starlette unchanged: a path that matches a route only with
another method (405), no route at all (404), mounted apps (the dashboard), paths with a
``root_path``, and every path when middleware was added. ``tests/unit/test_dispatch.py``
compares the two ways on paths and methods of every shape.
"""

from __future__ import annotations

import re
from typing import Any

from starlette._utils import is_async_callable
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import Route

_GROUP = re.compile(r"\(\?P<(\w+)>")


class Resolver:
    """``(route, path_params)`` of the first route whose path and method match, or None.

    Only for plain :class:`Route` objects with function endpoints; None (ask Starlette) for a
    path that one of the router's other entries (a Mount) might take."""

    def __init__(self, routes: list) -> None:
        self.prefixes: list[str] = []  # paths under these go through Starlette (mounts)
        plain: list[Route] = []
        for route in routes:
            if type(route) is Route and route.methods and is_async_callable(route.endpoint):
                plain.append(route)
            else:
                self.prefixes.append(getattr(route, "path", "") or "/")
        self.routes = plain
        self.routes_seen, self.count_seen = routes, len(routes)  # rebuilt when the router's list changes
        self.by_method: dict[str, tuple[re.Pattern, list]] = {}
        for method in sorted({m for r in plain for m in r.methods}):
            self.by_method[method] = self._combine([(i, r) for i, r in enumerate(plain) if method in r.methods])

    @staticmethod
    def _combine(indexed: list[tuple[int, Route]]) -> tuple[re.Pattern, list]:
        parts, table = [], []
        for i, route in indexed:
            pattern = _GROUP.sub(lambda m, i=i: f"(?P<r{i}_{m.group(1)}>", route.path_regex.pattern)
            parts.append(f"(?P<r{i}>{pattern})")
            table.append((f"r{i}", route, [(f"r{i}_{k}", k, c.convert) for k, c in route.param_convertors.items()]))
        by_group = {g: (route, params) for g, route, params in table}
        return re.compile("|".join(parts)), by_group  # type: ignore[return-value]

    def resolve(self, method: str, path: str) -> tuple[Route, dict[str, Any]] | None:
        entry = self.by_method.get(method)
        if entry is None:
            return None
        for prefix in self.prefixes:
            if path.startswith(prefix):
                return None
        pattern, by_group = entry
        m = pattern.match(path)
        if m is None:
            return None
        route, params = by_group[m.lastgroup]
        return route, {key: convert(m.group(group)) for group, key, convert in params}


class App(Starlette):
    """:class:`Starlette` with the shorter way to a matched route (module docstring)."""

    _resolver: Resolver | None = None

    def _fast(self) -> Resolver | None:
        if self.user_middleware or getattr(self, "max_body_size", None) is not None:
            return None
        routes = self.router.routes
        if (self._resolver is None or self._resolver.routes_seen is not routes
                or self._resolver.count_seen != len(routes)):
            self._resolver = Resolver(routes)
            handlers = dict(self.exception_handlers)
            self._error_handler = handlers.pop(Exception, None) or handlers.pop(500, None)
            self._status_handlers = {k: v for k, v in handlers.items() if isinstance(k, int)}
            self._handlers = {HTTPException: None, **{k: v for k, v in handlers.items() if not isinstance(k, int)}}
        return self._resolver

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            resolver = self._fast()
            found = resolver.resolve(scope["method"], scope["path"]) if resolver is not None else None
            if found is not None:
                await self._handle(scope, receive, send, *found)
                return
        await super().__call__(scope, receive, send)

    def _handler_for(self, exc: Exception):
        if isinstance(exc, HTTPException):
            handler = self._status_handlers.get(exc.status_code)
            if handler is not None:
                return handler
        for cls in type(exc).__mro__:
            if cls in self._handlers:
                return self._handlers[cls] or _http_exception
        return None

    async def _handle(self, scope, receive, send, route: Route, params: dict[str, Any]) -> None:
        scope["app"] = self
        scope["router"] = self.router
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = params
        started = False

        async def sender(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        request = Request(scope, receive, sender)
        try:
            try:
                response = await route.endpoint(request)
                await response(scope, receive, sender)
            except Exception as exc:
                handler = self._handler_for(exc)
                if handler is None:
                    raise
                if started:
                    raise RuntimeError("Caught handled exception, but response already started.") from exc
                response = await handler(request, exc)
                if response is not None:
                    await response(scope, receive, sender)
                exc.__traceback__ = None
        except Exception as exc:  # what Starlette's ServerErrorMiddleware does
            if self._error_handler is None:
                raise
            response = await self._error_handler(Request(scope), exc)
            if not started:
                await response(scope, receive, send)
            raise


async def _http_exception(request: Request, exc: Exception):
    """Starlette's own answer to an ``HTTPException`` no handler of the app takes."""
    from starlette.responses import PlainTextResponse, Response

    assert isinstance(exc, HTTPException)
    if exc.status_code in {204, 304}:
        return Response(status_code=exc.status_code, headers=exc.headers)
    return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)
