"""The admin API document (api/openapi.py) against the implementation (api/app.py).

Every /admin route is described with the role its handler requires; every answer of real
calls to a real server validates against the schema documented for its status; and a
property-based run sends requests generated from the document's own schemas: never a 5xx,
never an undocumented status, never a body that does not match.
"""

from __future__ import annotations

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


def test_every_admin_route_is_described_with_its_role():
    undescribed = sorted(f"{m.upper()} {p}" for m, p, _ in _admin_routes() if m not in DOC["paths"].get(p, {}))
    assert not undescribed, "admin routes missing from api/openapi.py PATHS:\n  " + "\n  ".join(undescribed)
    wrong = [f"{m.upper()} {p}: handler requires {h.required_role}, document says "
             f"{DOC['paths'][p][m]['x-required-role']}" for m, p, h in _admin_routes()
             if getattr(h, "required_role", None) != DOC["paths"][p][m]["x-required-role"]]
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
    proc = start_server(tmp_path_factory.mktemp("openapi"), extra_env={"DOCKYARD_GC_ENABLED": "false",
                                                                       "DOCKYARD_SCRUB_ENABLED": "false"})
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
    statuses = {s for _, _, s in calls}
    assert {200, 201, 202, 204, 400, 404} <= statuses
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
        if param["in"] == "path":
            url = url.replace("{%s}" % param["name"], quote(value, safe="/") or "x")
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

        @settings(max_examples=60, deadline=None, database=None,
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
    assert sum(seen.values()) >= 50  # 60 examples: about 6 s on an idle machine
    assert {s for _, _, s in seen} >= {200, 400}, "the generator reaches both valid and invalid requests"
