"""The admin API document (api/openapi.py) against the implementation (api/app.py).

Every /admin route is described with the role its handler requires; every answer of real
calls to a real server validates against the schema documented for its status; and a
property-based run sends requests generated from the document's own schemas: never a 5xx,
never an undocumented status, never a body that does not match.
"""

from __future__ import annotations

import json
import re
import time
from urllib.parse import quote

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockyard.api.app import routes
from dockyard.api.openapi import document
from tests.support import push_image, start_server

DOC = document()
METHODS = ("get", "put", "post", "delete", "patch")


def _admin_routes() -> set[tuple[str, str, object]]:
    out = set()
    for r in routes():
        if r.path.startswith("/admin"):
            p = re.sub(r"\{(\w+):\w+\}", r"{\1}", r.path)
            for m in r.methods - {"HEAD"}:
                out.add((m.lower(), p, r.endpoint))
    return out


def _stated(handler) -> tuple[str | None, bool]:
    """What the document must say of a handler: (x-required-role, x-host-credential). A route
    guarded by api/hosts.host_call (its required_role is "host": an admin, or the host named in
    the path with its own credential) is stated as admin with x-host-credential: true."""
    role = getattr(handler, "required_role", None)
    return ("admin", True) if role == "host" else (role, False)


def test_every_admin_route_is_described_with_its_role():
    undescribed = sorted(f"{m.upper()} {p}" for m, p, _ in _admin_routes() if m not in DOC["paths"].get(p, {}))
    assert not undescribed, "admin routes missing from api/openapi.py PATHS:\n  " + "\n  ".join(undescribed)
    wrong = [f"{m.upper()} {p}: handler requires {getattr(h, 'required_role', None)}, document says "
             f"{o['x-required-role']} (x-host-credential: {o.get('x-host-credential', False)})"
             for m, p, h in _admin_routes() if _stated(h) != ((o := DOC["paths"][p][m])["x-required-role"],
                                                              o.get("x-host-credential", False))]
    assert not wrong, "\n".join(wrong)
    served = {(m, p) for m, p, _ in _admin_routes()}
    stale = [f"{m.upper()} {p}" for p, ops in DOC["paths"].items() for m in ops if (m, p) not in served]
    assert not stale, f"described but not routed: {stale}"


def test_document_schemas_are_valid_and_refs_resolve():
    assert DOC["openapi"].startswith("3.1")
    for name, schema in DOC["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema)
    text = repr(DOC)
    for target in set(re.findall(r"#/components/schemas/(\w+)", text)):
        assert target in DOC["components"]["schemas"], target
    for p, ops in DOC["paths"].items():
        for m, o in ops.items():
            assert o["responses"] and o["summary"] and o["x-required-role"] in ("pull", "push", "admin"), (m, p)
            assert set(re.findall(r"\{(\w+)\}", p)) == {x["name"] for x in o["parameters"] if x["in"] == "path"}


def check_answer(method: str, template: str, response) -> None:
    """The answer's status is documented for the operation and its body matches the schema."""
    op = DOC["paths"][template][method]
    status = str(response.status_code)
    assert status in op["responses"], f"{method.upper()} {template}: undocumented {status}: {response.text[:300]}"
    content = op["responses"][status].get("content")
    if content is None:
        assert not response.content, f"{method.upper()} {template} {status}: body not documented"
        return
    schema = {**content["application/json"]["schema"], "components": DOC["components"]}
    jsonschema.validate(response.json(), schema, cls=jsonschema.Draft202012Validator)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = start_server(tmp_path_factory.mktemp("openapi"), extra_env={
        "DOCKYARD_GC_ENABLED": "false", "DOCKYARD_SCRUB_ENABLED": "false",
        # an endpoint nobody listens on (its state shows in /admin/v1/events), a quota of the file
        "DOCKYARD_NOTIFICATIONS": json.dumps({"hook": {"url": "http://127.0.0.1:9/", "events": ["push", "delete"]}}),
        "DOCKYARD_QUOTAS": json.dumps({"file": {"repositories": "file/*", "hard": "1MiB"}})})
    yield proc
    proc.stop()


def test_every_real_answer_matches_its_schema(server):
    calls = []
    with server.client() as c:
        def call(method, template, url, **kw):
            r = c.request(method, url, **kw)
            check_answer(method.lower(), template, r)
            calls.append((method, template, r.status_code))
            return r

        digest, _, _ = push_image(c, "doc/app", "v1", "doc-a")
        push_image(c, "doc/app", "v2", "doc-b")
        push_image(c, "doc/gone", "v1", "doc-c")
        assert c.delete(f"/v2/doc/app/manifests/{digest}").status_code == 202
        call("GET", "/admin/v1/openapi.json", "/admin/v1/openapi.json")
        call("GET", "/admin/v1/gc", "/admin/v1/gc")
        call("POST", "/admin/v1/gc", "/admin/v1/gc?dry_run=true")
        call("POST", "/admin/v1/gc", "/admin/v1/gc?dry_run=maybe")
        call("POST", "/admin/v1/scrub", "/admin/v1/scrub?dry_run=true")
        call("POST", "/admin/v1/gc", "/admin/v1/gc?dry_run=true&grace=10m")
        call("POST", "/admin/v1/gc", "/admin/v1/gc?grace=10")
        call("POST", "/admin/v1/fsck", "/admin/v1/fsck")
        call("GET", "/admin/v1/mirrors", "/admin/v1/mirrors")  # no mirror configured here: 404
        call("POST", "/admin/v1/mirrors/evict", "/admin/v1/mirrors/evict?reference=hub/app:v1")
        call("POST", "/admin/v1/mirrors/prune", "/admin/v1/mirrors/prune?dry_run=true")
        trash = call("GET", "/admin/v1/trash", "/admin/v1/trash?repository=doc/*&limit=10").json()
        assert [i["digest"] for i in trash["images"]] == [digest]
        call("GET", "/admin/v1/trash", "/admin/v1/trash?limit=x")
        call("POST", "/admin/v1/trash/purge", f"/admin/v1/trash/purge?reference=doc/app@{digest}&dry_run=1")
        call("POST", "/admin/v1/trash/purge", "/admin/v1/trash/purge?reference=doc/app:v1")
        call("POST", "/admin/v1/trash/restore", f"/admin/v1/trash/restore?reference=doc/app@{digest}")
        call("POST", "/admin/v1/trash/restore", "/admin/v1/trash/restore?reference=nope")
        call("POST", "/admin/v1/trash/restore", "/admin/v1/trash/restore?reference=no/such@sha256:" + "0" * 64)
        call("PUT", "/admin/v1/policies/{policy}", "/admin/v1/policies/keep1", json={"keep_recent": 1})
        call("PUT", "/admin/v1/policies/{policy}", "/admin/v1/policies/bad", json={"keep_recent": "x"})
        call("GET", "/admin/v1/policies", "/admin/v1/policies")
        call("POST", "/admin/v1/prune", "/admin/v1/prune?policy=keep1")
        call("POST", "/admin/v1/prune", "/admin/v1/prune?policy=none")
        call("GET", "/admin/v1/prune/audit", "/admin/v1/prune/audit")
        call("DELETE", "/admin/v1/policies/{policy}", "/admin/v1/policies/keep1")
        call("DELETE", "/admin/v1/policies/{policy}", "/admin/v1/policies/keep1")
        call("DELETE", "/admin/v1/repositories/{name}", "/admin/v1/repositories/doc/gone")
        call("DELETE", "/admin/v1/repositories/{name}", "/admin/v1/repositories/doc/gone")

        # events
        listed = call("GET", "/admin/v1/events", "/admin/v1/events").json()
        assert listed["events"] and listed["endpoints"]["hook"]["url"] == "http://127.0.0.1:9/"
        pushes = call("GET", "/admin/v1/events", "/admin/v1/events?kind=push&repository=doc/app&limit=5").json()
        assert pushes["events"] and {(e["kind"], e["repository"]) for e in pushes["events"]} == {("push", "doc/app")}
        call("GET", "/admin/v1/events", "/admin/v1/events?kind=nope")
        call("GET", "/admin/v1/events", "/admin/v1/events?limit=x")

        # quotas
        Q = "/admin/v1/quotas/{quota}"
        stored = call("PUT", Q, "/admin/v1/quotas/doc", json={"repositories": "doc/*", "hard": "1GiB", "soft": 0.5})
        assert stored.status_code == 201 and stored.json()["usage"] > 0
        call("PUT", Q, "/admin/v1/quotas/doc", json={"repositories": "doc/*", "hard": 10_000_000})
        call("PUT", Q, "/admin/v1/quotas/bad", json={"repositories": "doc/*"})
        call("PUT", Q, "/admin/v1/quotas/bad", content=b"not json")
        assert call("PUT", Q, "/admin/v1/quotas/file", json={"repositories": "x/*", "hard": 1}).status_code == 403
        assert set(call("GET", "/admin/v1/quotas", "/admin/v1/quotas").json()) == {"doc", "file"}
        assert call("GET", Q, "/admin/v1/quotas/doc").json()["hard"] == 10_000_000
        assert call("GET", Q, "/admin/v1/quotas/file").json()["configured"] is True
        call("GET", Q, "/admin/v1/quotas/none")
        call("DELETE", Q, "/admin/v1/quotas/doc")
        call("DELETE", Q, "/admin/v1/quotas/doc")
        call("DELETE", Q, "/admin/v1/quotas/file")  # configured: 404

        # hosts: admin routes, then a host's own calls with its credential
        H = "/admin/v1/hosts/{host}"
        token = call("POST", H, "/admin/v1/hosts/web-1").json()["token"]
        other = call("POST", H, "/admin/v1/hosts/web-2").json()["token"]
        call("POST", H, "/admin/v1/hosts/web-1")  # exists: 409
        call("POST", H, "/admin/v1/hosts/-bad")
        me = {"Authorization": f"Bearer {token}"}
        call("POST", H + "/heartbeat", "/admin/v1/hosts/web-1/heartbeat", headers=me,
             json={"address": "10.0.0.5", "version": "1.0"})
        call("POST", H + "/heartbeat", "/admin/v1/hosts/web-1/heartbeat", headers=me, content=b"[]")
        call("POST", H + "/heartbeat", "/admin/v1/hosts/nohost/heartbeat")
        v2 = c.get("/v2/doc/app/manifests/v2", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        v2_digest = v2.headers["Docker-Content-Digest"]
        line = {"repository": "doc/app", "tag": "v2", "digest": v2_digest, "bytes": 1234, "containers": ["web"],
                "pulled_at": 1.5e9}
        counts = call("PUT", H + "/inventory", "/admin/v1/hosts/web-1/inventory", headers=me,
                      content=(json.dumps(line) + "\n").encode()).json()
        assert counts == {"images": 1, "added": 1, "updated": 0, "removed": 0}
        call("PUT", H + "/inventory", "/admin/v1/hosts/web-1/inventory", headers=me, content=b"{nope\n")
        call("PUT", H + "/inventory", "/admin/v1/hosts/nohost/inventory", content=b"")
        hosts = call("GET", "/admin/v1/hosts", "/admin/v1/hosts").json()["hosts"]
        assert [(h["name"], h["state"], h["images"]) for h in hosts] == [("web-1", "up", 1), ("web-2", "down", 0)]
        assert call("GET", "/admin/v1/hosts", "/admin/v1/hosts", headers=me).status_code == 403  # not an admin
        W = H + "/work"
        call("POST", W, "/admin/v1/hosts/web-1/work?kind=delete&reference=doc/app:v2&dry_run=true")
        delete_id = call("POST", W, "/admin/v1/hosts/web-1/work?kind=delete&reference=doc/app:v2").json()["id"]
        pull_id = call("POST", W, "/admin/v1/hosts/web-1/work?kind=pull&reference=doc/app:v2").json()["id"]
        call("POST", W, "/admin/v1/hosts/web-1/work?kind=pull&reference=doc/app:nope")
        call("POST", W, "/admin/v1/hosts/web-1/work?kind=burn&reference=doc/app:v2")
        call("POST", W, "/admin/v1/hosts/web-1/work?kind=pull&reference=Bad:Ref")
        call("POST", W, "/admin/v1/hosts/nohost/work?kind=pull&reference=doc/app:v2")
        work = call("GET", W, "/admin/v1/hosts/web-1/work?wait=5", headers=me).json()["work"]
        assert {w["id"] for w in work} == {delete_id, pull_id}
        call("GET", W, "/admin/v1/hosts/web-1/work?wait=x", headers=me)
        assert call("GET", W, "/admin/v1/hosts/web-2/work?wait=0.2").json() == {"work": []}
        assert call("GET", W, "/admin/v1/hosts/web-2/work", headers=me).status_code == 403  # not its host
        results = [{"id": delete_id, "ok": False, "error": "in use"},
                   {"id": pull_id, "ok": True, "image": {**line, "tag": "v2", "containers": []}}]
        assert call("POST", W + "/results", "/admin/v1/hosts/web-1/work/results", headers=me,
                    json={"results": results}).json() == {"done": 1, "failed": 1}
        call("POST", W + "/results", "/admin/v1/hosts/web-1/work/results", headers=me, json={"results": [{}]})
        held = call("GET", H + "/images", "/admin/v1/hosts/web-1/images", headers=me).json()
        assert held["images"][0]["delete"]["state"] == "failed" and held["images"][0]["managed"]
        call("GET", H + "/images", "/admin/v1/hosts/web-1/images", headers={"Authorization": f"Bearer {other}"})
        call("GET", H + "/images", "/admin/v1/hosts/web-1/images", headers={"Authorization": "Bearer dyh_nope"})
        call("GET", H + "/images", "/admin/v1/hosts/nohost/images")
        call("GET", H + "/images", "/admin/v1/hosts/-bad/images")
        call("DELETE", H, "/admin/v1/hosts/web-2")
        call("DELETE", H, "/admin/v1/hosts/web-2")
        revoked = call("GET", "/admin/v1/hosts", "/admin/v1/hosts").json()["hosts"][1]
        assert revoked["state"] == "revoked"
        assert call("GET", H + "/images", "/admin/v1/hosts/web-2/images",
                    headers={"Authorization": f"Bearer {other}"}).status_code == 401  # revoked
        I = "/admin/v1/images"
        dry = call("DELETE", I, "/admin/v1/images?reference=doc/app:v2&dry_run=true").json()
        assert dry["hosts_holding"] == ["web-1"] and dry["digest"] == v2_digest and not dry["deleted"]
        call("DELETE", I, "/admin/v1/images?reference=doc/app@sha256:" + "0" * 64)
        call("DELETE", I, "/admin/v1/images?reference=")
        assert call("DELETE", I, "/admin/v1/images?reference=doc/app:v2").json()["deleted"] is True
        call("GET", "/admin/v1/events", "/admin/v1/events?kind=delete")

        # the blob cache (none here: filesystem storage; each replica answers {"enabled": false})
        C = "/admin/v1/cache/{target}"
        listing = call("GET", "/admin/v1/cache", "/admin/v1/cache?limit=10").json()
        assert listing["failed_replicas"] == [] and listing["total_entries"] == 0
        assert call("GET", "/admin/v1/cache", "/admin/v1/cache?scope=local").json() == {"enabled": False}
        call("GET", "/admin/v1/cache", "/admin/v1/cache?limit=-1")
        call("DELETE", "/admin/v1/cache", "/admin/v1/cache?dry_run=true")
        call("POST", "/admin/v1/cache/clean", "/admin/v1/cache/clean?dry_run=true&verify=true")
        call("POST", "/admin/v1/cache/prune", "/admin/v1/cache/prune?dry_run=true")
        call("POST", "/admin/v1/cache/prune", "/admin/v1/cache/prune?dry_run=perhaps")
        call("PUT", C, "/admin/v1/cache/doc/app:v2?pin=true")
        call("PUT", C, "/admin/v1/cache/example.com/doc/app:v2")
        call("DELETE", C, f"/admin/v1/cache/{v2_digest}?dry_run=true")
        call("DELETE", C, "/admin/v1/cache/sha256:nothex")
    statuses = {s for _, _, s in calls}
    assert {200, 201, 202, 204, 400, 401, 403, 404, 405, 409} <= statuses
    described = {(m.upper(), p) for p, ops in DOC["paths"].items() for m in ops}
    assert described == {(m, p) for m, p, _ in calls}, "every described operation is called at least once"


# ---- property-based: requests generated from the document ------------------------------

def from_schema(schema: dict) -> st.SearchStrategy:
    if "$ref" in schema:
        return from_schema(DOC["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": k}) for k in kind])
    if kind == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True).filter(lambda s: 0 < len(s) < 80)
        return st.text(max_size=30, min_size=schema.get("minLength", 0))
    if kind == "integer":
        return st.integers(min_value=schema.get("minimum", -5), max_value=50)
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False, min_value=-1, max_value=1e7)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {"type": "string"})), max_size=3)
    if kind == "object":
        props = schema.get("properties", {})
        return st.fixed_dictionaries({}, optional={k: from_schema(v) for k, v in props.items()})
    return st.one_of(st.none(), st.integers(), st.text(max_size=10))


OPERATIONS = sorted((p, m) for p, ops in DOC["paths"].items() for m in ops)


@st.composite
def requests_(draw):
    template, method = draw(st.sampled_from(OPERATIONS))
    op = DOC["paths"][template][method]
    url, query = template, {}
    for param in op["parameters"]:
        valid = from_schema(param["schema"])
        value = draw(st.one_of(valid, valid, st.text(max_size=12)) if param["in"] == "query" else valid)
        if param["name"] == "wait":  # a long poll answers the same at any wait, only later: keep the run short
            value = draw(st.one_of(st.floats(0, 0.2), st.sampled_from(["", "x", "-1", "nan"])))
        if param["in"] == "path":
            # dot segments are resolved by the client: /a/../b is /b (another route)
            value = "/".join("x" if part in (".", "..") else part for part in value.split("/")) or "x"
            # a line break in a path never reaches a handler ({x:path} is '.*', which stops at one):
            # the router answers 404 before the operation this document describes
            value = value.replace("\n", "x").replace("\r", "x")
            url = url.replace("{%s}" % param["name"], quote(value, safe="/"))
        elif param["required"] or draw(st.booleans()):
            query[param["name"]] = value
    body = None
    if "requestBody" in op and "application/json" in op["requestBody"]["content"]:
        body = draw(from_schema(op["requestBody"]["content"]["application/json"]["schema"]))
    return method, template, url, query, body


def test_generated_requests_get_documented_answers(server):
    started = time.monotonic()
    seen: dict[tuple[str, str, int], int] = {}
    with server.client() as c:
        push_image(c, "gen/app", "v1", "gen-a")

        @settings(max_examples=300, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
        @given(requests_())
        def probe(req):
            method, template, url, query, body = req
            r = c.request(method.upper(), url, params=query, json=body)
            assert r.status_code < 500, (method, url, query, body, r.text[:300])
            check_answer(method, template, r)
            seen[(method, template, r.status_code)] = seen.get((method, template, r.status_code), 0) + 1

        probe()
    print(f"{sum(seen.values())} generated requests in {time.monotonic() - started:.1f} s:",
          ", ".join(f"{m.upper()} {t} {s}: {n}" for (m, t, s), n in sorted(seen.items())))
    assert sum(seen.values()) >= 250  # 300 examples over ~45 operations: a few seconds on an idle machine
    assert {s for _, _, s in seen} >= {200, 400}, "the generator reaches both valid and invalid requests"
