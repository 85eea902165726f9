"""api.dispatch: the shorter way to a route picks the route Starlette's router would pick, with
the same path parameters, and answers errors as Starlette's layers do."""

from __future__ import annotations

import itertools
import random

import httpx
import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Match, Route

from dockyard.api import app as app_module
from dockyard.api.dispatch import App, Resolver
from dockyard.api.errors import not_found_handler, registry_error_handler, unexpected_error_handler
from dockyard.errors import RegistryError

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
PIECES = ["a", "lib", "x.y", "blobs", "uploads", "manifests", "tags", "list", "referrers", "", "sha256:ab",
          "_catalog", "v2", "dashboard", "admin", "%2F", "é", "a b", "a\nb", "ref\n"]


def starlette_pick(routes, method: str, path: str):
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            return route, child.get("path_params", {})
    return None


def paths() -> list[str]:
    rng = random.Random(16)
    found = ["/v2/", "/v2", "/v2/_catalog", "/", "/metrics", "/healthz", "/dashboard/", "/static/x.css"]
    tails = ["/tags/list", "/referrers/{}", "/manifests/{}", "/blobs/uploads/", "/blobs/uploads", "/blobs/uploads/{}",
             "/blobs/{}", "/blobs/{}/", "/manifests/", "/blobs/", "/{}", ""]
    for _ in range(3000):
        name = "/".join(rng.choice(PIECES) for _ in range(rng.randint(0, 4)))
        tail = rng.choice(tails).format(rng.choice(PIECES))
        found.append(f"/v2/{name}{tail}")
        found.append(f"/v2{name}{tail}")
    for a, b in itertools.product(["admin/v1/quotas", "admin/v1/gc", "admin/v1/repositories", "auth/token"],
                                  ["", "/x", "/x/y", "/"]):
        found.append(f"/{a}{b}")
    return found


def test_the_resolver_picks_starlettes_route_on_every_path_and_method():
    routes = app_module.routes()
    resolver = Resolver(routes)
    checked = hits = 0
    for path in paths():
        for method in METHODS:
            want = starlette_pick(routes, method, path)
            got = resolver.resolve(method, path)
            checked += 1
            if got is None:  # Starlette answers: only where a mount may take the path, or no route matches
                assert want is None or any(path.startswith(p) for p in resolver.prefixes), (method, path, want)
                continue
            hits += 1
            assert want is not None, (method, path, got)
            assert got[0] is want[0] and got[1] == want[1], (method, path, got, want)
    assert hits > 4000, (hits, checked)


def test_the_first_route_wins_where_two_match():
    async def one(request):
        return Response()

    async def two(request):
        return Response()

    routes = [Route("/v2/{name:path}/x/{a}", one, methods=["GET"]), Route("/v2/{name:path}/{a}", two),
              Route("/v2/{name:path}/y/{a}", one, methods=["GET", "PUT"])]
    resolver = Resolver(routes)
    for path in ["/v2/q/x/y", "/v2/q/y/z", "/v2/x/x/x", "/v2//x/y"]:
        for method in ("GET", "PUT", "DELETE"):
            want = starlette_pick(routes, method, path)
            got = resolver.resolve(method, path)
            assert (got and (got[0], got[1])) == (want and (want[0], want[1])), (method, path)
    assert resolver.resolve("GET", "/v2/q/x/y")[0] is routes[0]
    assert resolver.resolve("PUT", "/v2/q/y/z")[0] is routes[2]


def test_the_resolver_leaves_a_mounted_prefix_to_starlette():
    resolver = Resolver(app_module.routes())
    assert resolver.prefixes  # the dashboard is mounted
    assert all(resolver.resolve("GET", p + "/x") is None for p in resolver.prefixes)


class Boom(Exception):
    pass


def _routes():
    async def ok(request):
        return JSONResponse({"params": request.path_params, "endpoint": request.scope["endpoint"].__name__})

    async def oci(request):
        raise RegistryError("BLOB_UNKNOWN", "no such blob", {"digest": request.path_params["d"]})

    async def boom(request):
        raise Boom("inside")

    async def teapot(request):
        raise HTTPException(418, "short and stout")

    async def late(request):
        async def body():
            yield b"first"
            raise RegistryError("UNKNOWN", "after the start")
        return StreamingResponse(body())

    async def empty(request):
        return Response(status_code=204)

    return [Route("/v2/{name:path}/ok/{ref}", ok, methods=["GET"]), Route("/v2/{name:path}/oci/{d}", oci),
            Route("/boom", boom), Route("/teapot", teapot, methods=["GET", "DELETE"]), Route("/late", late),
            Route("/empty", empty, methods=["PUT"])]


def _app(cls):
    return cls(routes=_routes(), exception_handlers={RegistryError: registry_error_handler,
                                                     HTTPException: not_found_handler,
                                                     Exception: unexpected_error_handler})


@pytest.mark.parametrize("method,path", [
    ("GET", "/v2/a/b/ok/r1"), ("HEAD", "/v2/a/ok/r1"), ("POST", "/v2/a/ok/r1"), ("GET", "/v2/a/oci/sha256:x"),
    ("HEAD", "/v2/a/oci/sha256:x"), ("GET", "/boom"), ("GET", "/teapot"), ("PUT", "/teapot"), ("GET", "/nowhere"),
    ("PUT", "/empty"), ("GET", "/empty"), ("GET", "/v2/a/ok/r1/"),
])
def test_app_answers_as_starlette_does(method, path):
    async def ask(cls):
        transport = httpx.ASGITransport(app=_app(cls), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.request(method, path)
            return r.status_code, r.content, sorted((k, v) for k, v in r.headers.items())

    import asyncio

    assert asyncio.run(ask(App)) == asyncio.run(ask(Starlette))


@pytest.mark.parametrize("path,error", [("/boom", Boom), ("/late", RuntimeError)])
def test_app_raises_what_starlette_raises(path, error):
    """An unhandled error (and a handled one after the response started) reaches the server."""
    import asyncio

    async def ask(cls):
        transport = httpx.ASGITransport(app=_app(cls))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await client.get(path)

    for cls in (App, Starlette):
        with pytest.raises(error):
            asyncio.run(ask(cls))


def test_the_short_way_is_taken():
    """The route is resolved by App, not Starlette's router (whose ``app`` would set the scope's ``router`` first)."""
    import asyncio

    app = _app(App)
    calls = []
    original = app.router.middleware_stack

    async def counting(scope, receive, send):
        calls.append(scope["path"])
        await original(scope, receive, send)

    app.router.middleware_stack = counting

    async def ask():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            assert (await client.get("/v2/a/ok/r")).status_code == 200
            assert (await client.get("/nowhere")).status_code == 404

    asyncio.run(ask())
    assert calls == ["/nowhere"]


def test_a_route_added_later_is_found():
    import asyncio

    app = _app(App)

    async def later(request):
        return Response(b"later")

    async def ask():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            assert (await client.get("/v2/a/ok/r")).status_code == 200  # the resolver is built
            app.router.routes.insert(0, Route("/v2/{name:path}/ok/{ref}", later, methods=["GET"]))
            return (await client.get("/v2/a/ok/r")).content

    assert asyncio.run(ask()) == b"later"
