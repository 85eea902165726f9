"""FUZZ TEST (issue 10): random requests to every route the app registers; none may give a 5xx
or leave a traceback in the server log.

The routes come from ``dockyard.api.app.routes()``, the list ``create_app`` builds the
application from, so a new route is fuzzed without touching this file. Each example is
one request to a real ``dockyard serve`` process of its own (the fuzzer deletes
repositories, runs prunes and collections: it must not share a server with other tests):
a method among the route's, path parameters valid and hostile (names, digests, tags, upload
ids, policy names), query parameters (huge, negative, garbage numbers; the flags the
admin routes read), headers (Range, Content-Range, Content-Type, Accept, Authorization
junk) and bodies (random bytes, JSON of every type, JSON nested far too deep, manifests
and kubectl lists with wrong-typed fields).

Runs two servers (open, and htpasswd auth), about 15-30 s each; ``DOCKYARD_FUZZ_EXAMPLES``
sets the number of requests per server (0 skips the test).
"""

from __future__ import annotations

import base64
import json
import os
import re
from urllib.parse import quote

import bcrypt
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockyard.api.app import routes
from tests.support import OCI_MANIFEST, image_manifest, make_config, make_layer, push_blob, sha256, start_server

pytestmark = pytest.mark.slow  # a long race, kill or soak: the README's test command runs it too

EXAMPLES = int(os.environ.get("DOCKYARD_FUZZ_EXAMPLES", "1000"))
REPO = "fuzz/app"
USER, PASSWORD = "fuzzer", "fuzz-pw"

HUGE = "9" * 5000
NUMBERS = ["0", "1", "2", "-1", "10", "10000", "10001", str(2**63 - 1), str(2**63), "99999999999999999999", HUGE,
           "0" * 5000 + "1", "1e3", "0x10", " 1", "1 ", "", "NaN", "inf", "\u00b2", "١٢", "+5", "1.5"]
GARBAGE = ["", " ", "a", "..", "../..", "%00", "\x00", "\u00e9", "\u202e", "*", "?", "a" * 5000, "true", "false",
           "yes", "null", "[]", "{}", "'", '"', "\\", "sha256:", "team/*", "a@sha256:" + "0" * 64, "a:b", ":"]


class Target:
    """What the fuzzer knows exists on its server (filled in by the fixture)."""

    def __init__(self, server, auth: bool):
        self.server = server
        self.auth = auth
        self.digests: list[str] = []  # the seeded image's config, layer and manifest
        self.upload_ids: list[str] = []  # the seeded open upload
        self.log_offset = 0

    def new_log(self) -> str:
        with open(self.server.log_path, "rb") as f:
            f.seek(self.log_offset)
            raw = f.read()
        self.log_offset += len(raw)
        return raw.decode("utf-8", "replace")


def _seed(client: httpx.Client, target: Target) -> None:
    """An image, an open upload and a harmless policy, so valid path parameters reach the code
    behind the lookups (ranges, manifests, prune bodies). Run again whenever the fuzzer has
    deleted them."""
    config, layer = make_config("fuzz"), make_layer("fuzz")
    manifest = image_manifest(config, [layer])
    for data in (config, layer):
        push_blob(client, REPO, data)
    r = client.put(f"/v2/{REPO}/manifests/v1", content=manifest, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text
    target.digests = [sha256(config), sha256(layer), sha256(manifest)]
    r = client.post(f"/v2/{REPO}/blobs/uploads/")
    assert r.status_code == 202, r.text
    target.upload_ids[:] = [r.headers["Location"].rstrip("/").rsplit("/", 1)[1]]
    r = client.put("/admin/v1/policies/fuzz", json={"keep_recent": 100, "repositories": ["nothing/*"]})
    assert r.status_code == 201, r.text


def _reseed_if_gone(client: httpx.Client, target: Target) -> None:
    if (client.head(f"/v2/{REPO}/manifests/v1").status_code != 200
            or any(client.head(f"/v2/{REPO}/blobs/{d}").status_code != 200 for d in target.digests[:2])
            or client.get(f"/v2/{REPO}/blobs/uploads/{target.upload_ids[0]}").status_code != 204):
        _seed(client, target)


@pytest.fixture(scope="module", params=["open", "htpasswd"])
def target(request, tmp_path_factory):
    data = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    env = {"DOCKYARD_GC_ENABLED": "false", "DOCKYARD_SCRUB_ENABLED": "false"}
    if request.param == "htpasswd":
        htpasswd = data / "htpasswd"
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$")
        htpasswd.write_text(f"{USER}:{hashed}\n")
        env.update({"DOCKYARD_AUTH_HTPASSWD": str(htpasswd), "DOCKYARD_AUTH_ROLES": f"{USER}=admin"})
    server = start_server(data, extra_env=env)
    try:
        t = Target(server, request.param == "htpasswd")
        with server.client(auth=(USER, PASSWORD) if t.auth else None) as c:
            _seed(c, t)
        t.log_offset = len(server.log_path.read_bytes())
        yield t
    finally:
        server.stop()
    assert "Traceback" not in server.log()


# ---- strategies ------------------------------------------------------------

def _digest_values(target: Target):
    return st.one_of(
        st.sampled_from(target.digests), st.sampled_from(target.digests), st.sampled_from(target.digests),
        st.sampled_from(["sha256:" + "0" * 64, "sha256:" + "A" * 64, "sha256:" + "0" * 63, "sha512:" + "0" * 128,
                         "sha384:" + "0" * 96, "md5:" + "0" * 32, "sha256:" + "g" * 64, "sha256", "sha256:",
                         ":" + "0" * 64, "sha256+b64:AAAA", "SHA256:" + "0" * 64, "sha256:" + "0" * 5000]),
        st.sampled_from(GARBAGE),
        st.text(max_size=80),
    )


def _path_values(target: Target) -> dict:
    # the seeded repository and digests half the time: only they get past the lookups
    names = st.one_of(st.just(REPO), st.just(REPO), st.just(REPO), st.sampled_from(["a", "team/app", "fuzz", "a/b/c/d", "A", "a_b", "a__b", "a..b",
                                                      "-a", "a-", "a//b", "/a", "a/", "x" * 300, "a/" * 100 + "a"]),
                      st.sampled_from(GARBAGE), st.text(max_size=40))
    tags = st.one_of(st.sampled_from(["v1", "latest", "v2", "a" * 128, "a" * 129, "-x", ".x", "_x"]),
                     st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,20}", fullmatch=True))
    other = st.one_of(st.sampled_from(GARBAGE), st.text(max_size=40))
    return {
        "name": names,
        "digest": _digest_values(target),
        "reference": st.one_of(tags, _digest_values(target)),
        "upload_id": st.one_of(st.builds(lambda: target.upload_ids[0]), st.builds(lambda: target.upload_ids[0]),
                               st.sampled_from(["00000000-0000-0000-0000-000000000000", "x", "../../etc"]),
                               st.sampled_from(GARBAGE), st.text(max_size=40)),
        "policy": st.one_of(st.sampled_from(["fuzz", "nothing", "x" * 300]), st.sampled_from(GARBAGE),
                            st.text(max_size=30)),
        None: other,
    }


QUERY_KEYS = ["n", "last", "limit", "digest", "mount", "from", "policy", "confirm", "dry_run", "repository",
              "reference", "artifactType", "ignore_invalid_refs", "service", "scope", "account", "x"]


def _query(target: Target):
    value = st.one_of(st.sampled_from(NUMBERS), st.sampled_from(GARBAGE), st.sampled_from(target.digests),
                      st.sampled_from(["fuzz", REPO, f"{REPO}:v1", f"{REPO}@{target.digests[-1]}", "repository:x:pull"]),
                      st.text(max_size=30))
    return st.dictionaries(st.sampled_from(QUERY_KEYS), value, max_size=4)


def _auth_values(target: Target):
    good = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    junk = st.one_of(
        st.sampled_from(["Bearer", "Bearer ", "Bearer x", "Bearer a.b.c", "Bearer ...", "Basic", "Basic !!!",
                         "Basic " + base64.b64encode(b"nocolon").decode(), "Basic " + base64.b64encode(b":").decode(),
                         "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(), "Basic =", "Digest x", "x" * 5000,
                         "Bearer " + "A" * 5000, "Basic " + base64.b64encode(b"fuzzer:" + b"p" * 200).decode()]),
        st.builds(lambda a, b: f"Bearer {a}.{b}", st.text("AZaz09-_", max_size=40), st.text("AZaz09-_=", max_size=40)),
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=60),
    )
    return st.one_of(st.just(good), junk) if target.auth else junk


HEADER_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=30)  # any but CR, LF, NUL...


def _headers(target: Target):
    number = st.sampled_from(NUMBERS[:12])
    range_value = st.one_of(
        st.builds(lambda a, b: f"bytes={a}-{b}", number, number),
        st.builds(lambda b: f"bytes=-{b}", number),
        st.sampled_from(["bytes=", "bytes=-", "bytes=0-0,2-3", "items=0-1", "bytes=5-1", "bytes 0-1", "bytes=\u0661-"]),
        HEADER_TEXT,
    )
    content_range = st.one_of(st.builds(lambda a, b: f"{a}-{b}", number, number),
                              st.builds(lambda a, b: f"bytes {a}-{b}/*", number, number), HEADER_TEXT)
    content_type = st.one_of(st.sampled_from([OCI_MANIFEST, "application/vnd.oci.image.index.v1+json",
                                              "application/vnd.docker.distribution.manifest.v2+json",
                                              "application/json", "application/octet-stream", "text/plain",
                                              "application/vnd.oci.image.manifest.v1+json; charset=utf-8", ";", ""]),
                             st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=40))
    accept = st.sampled_from([OCI_MANIFEST, "*/*", "application/vnd.oci.image.index.v1+json, */*;q=0.1", ",,,", "x"])
    return st.fixed_dictionaries({}, optional={
        "Range": range_value, "Content-Range": content_range, "Content-Type": content_type, "Accept": accept,
        "Authorization": _auth_values(target),
    })


class Body(bytes):
    """Request bytes that print short (a falsifying example may be 100 kB of brackets)."""

    def __repr__(self) -> str:
        return bytes.__repr__(self) if len(self) <= 120 else f"Body({bytes(self[:60])!r} ... {len(self)} bytes)"

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(repr(self))


def _deep(depth: int, open_: str = "[", close: str = "]") -> bytes:
    return (open_ * depth + close * depth).encode()


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                    max_leaves=8)
FIELDS = ["schemaVersion", "mediaType", "config", "layers", "manifests", "subject", "annotations", "artifactType",
          "digest", "size", "urls", "platform", "items", "metadata", "spec", "containers", "initContainers",
          "containerStatuses", "image", "imageID", "kind", "repositories", "tags_include", "tags_exclude",
          "keep_tag_revisions", "keep_recent", "keep_pushed_within", "keep_pulled_within", "untagged",
          "immutable_tags", "schedule"]


def _json_body(target: Target):
    wrong_typed = st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6)
    manifest_like = st.builds(
        lambda extra: {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": target.digests[0], "size": 10}, "layers": [], **extra},
        wrong_typed)
    kubectl_like = st.builds(lambda spec: {"kind": "List", "items": [{"kind": "Pod", "metadata": {"name": "p"},
                                                                      "spec": spec}]}, wrong_typed)
    doc = st.one_of(JSON, wrong_typed, manifest_like, kubectl_like)
    special = st.sampled_from(['{"a": NaN}', '{"keep_recent": 1, "schedule": Infinity}', "[" * 100_000,
                               '{"keep_pushed_within": 1' + "0" * 5000 + "}", '{"items": 5}', '{"n": -Infinity}'])
    return st.one_of(doc.map(lambda d: json.dumps(d).encode()), special.map(str.encode))


def _body(target: Target):
    return _bodies(target).map(Body)


def _bodies(target: Target):
    return st.one_of(
        st.just(b""),
        st.binary(max_size=300),
        _json_body(target),
        st.builds(_deep, st.sampled_from([65, 500, 999, 1000, 5000, 100_000]), st.sampled_from(["[", "{\"a\":"]),
                  st.sampled_from(["]", "}"])),
        st.builds(lambda d: ('{"schemaVersion": 2, "annotations": {"a": ' * 1 + "[" * d + "]" * d + "}}").encode(),
                  st.sampled_from([63, 64, 65, 990, 2000])),
    )


def _flat(found, prefix: str = ""):
    """(full path, route) of every route, those under a Mount (the dashboard) too."""
    for route in found:
        if hasattr(route, "routes") and not hasattr(route, "methods"):  # a Mount
            yield from _flat(route.routes, prefix + route.path)
        elif hasattr(route, "methods"):
            yield prefix + route.path, route


def _route_requests(target: Target):
    choices = []
    for path, route in _flat(routes()):
        for method in sorted(route.methods or []):
            choices.append((path, method))

    # strategies built once: building them in every draw cost more than the requests
    route, params, suffix = st.sampled_from(choices), _path_values(target), st.sampled_from(["/", "//", "/..", "%2F"])
    query, headers, body = _query(target), _headers(target), _body(target)

    @st.composite
    def request(draw):
        path, method = draw(route)
        values = {}
        for param in re.findall(r"{(\w+)(?::\w+)?}", path):
            values[param] = draw(params.get(param, params[None]))
        url = re.sub(r"{(\w+)(?::\w+)?}", lambda m: quote(values[m.group(1)], safe="/:@"), path)
        if draw(st.integers(0, 9)) == 0:
            url += draw(suffix)
        return method, url, draw(query), draw(headers), draw(body)

    return request()


def test_fuzz_every_route(target):
    if EXAMPLES <= 0:
        pytest.skip("DOCKYARD_FUZZ_EXAMPLES=0")
    assert len(routes()) > 20  # the enumeration sees the app's routes

    client = httpx.Client(base_url=target.server.url, timeout=60)
    admin = target.server.client(auth=(USER, PASSWORD) if target.auth else None)
    previous: list = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(_route_requests(target))
    def one_request(req):
        method, url, params, headers, body = req
        try:
            r = client.request(method, url, params=params, content=body,
                               headers={k: v.strip().encode("utf-8") for k, v in headers.items()})
        except httpx.LocalProtocolError:  # httpx would not send it (say, a space in a header name): nothing to test
            return
        log = target.new_log()
        assert r.status_code < 500, (r.status_code, r.text[:300], log[-3000:])
        # a traceback logged after its response was sent (an error while streaming) can show up
        # one request late: the previous request is named too
        assert "Traceback" not in log, (log[-3000:], "previous request:", previous[:1])
        previous[:] = [req]
        if r.status_code >= 400 and method != "HEAD" and r.headers.get("content-type", "").startswith(
                "application/json"):
            errors = r.json().get("errors")
            assert errors and {"code", "message", "detail"} <= set(errors[0]), r.text[:300]
        if r.status_code < 300 and (method in ("DELETE", "PUT", "PATCH") or url.startswith("/admin")):
            _reseed_if_gone(admin, target)

    try:
        one_request()
    finally:
        client.close()
        admin.close()
