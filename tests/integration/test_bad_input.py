"""Hostile input gets the protocol's 4xx and the OCI error envelope, never a 500 (issue 10).

Each case was once seen as a traceback in the server log: numbers too long for ``int()``,
JSON nested too deep for the parser, limits too large for SQLite, non-finite durations that
made every later ``GET /admin/v1/policies`` fail, and request bodies of the wrong shape.
"""

import json

import pytest

from tests.support import OCI_MANIFEST, push_blob, sha256

HUGE = "9" * 5000  # past Python's 4,300-digit int() limit
OVER_INT64 = "99999999999999999999"  # 20 digits: overflows a 64-bit database integer
DEEP = "[" * 1000 + "]" * 1000


class LogWatch:
    """The part of the server log written since the test started."""

    def __init__(self, server):
        self.server = server
        self.start = len(server.log())

    def new(self) -> str:
        return self.server.log()[self.start:]


@pytest.fixture
def log(server):
    watch = LogWatch(server)
    yield watch
    assert "Traceback" not in watch.new()


def assert_error(r, status: int, code: str | None = None):
    assert r.status_code == status, (r.status_code, r.text[:500])
    if r.request.method != "HEAD":
        err = r.json()["errors"][0]
        assert set(err) == {"code", "message", "detail"} and err["message"]
        if code:
            assert err["code"] == code, err


# ---- 1. numbers too long for int() ----------------------------------------

def test_range_with_huge_numbers(client, repo, log):
    data = b"0123456789"
    digest = push_blob(client, repo, data)
    url = f"/v2/{repo}/blobs/{digest}"
    assert_error(client.get(url, headers={"Range": f"bytes={HUGE}-"}), 416, "SIZE_INVALID")
    assert_error(client.get(url, headers={"Range": f"bytes={OVER_INT64}-"}), 416, "SIZE_INVALID")
    assert_error(client.head(url, headers={"Range": f"bytes={HUGE}-{HUGE}"}), 416)
    r = client.get(url, headers={"Range": f"bytes={'0' * 5000}-{'0' * 4999}3"})  # long, yet small
    assert r.status_code == 206 and r.content == b"0123"
    # an end (or suffix) past any blob means "to the end", as RFC 9110 says
    r = client.get(url, headers={"Range": f"bytes=2-{HUGE}"})
    assert r.status_code == 206 and r.content == data[2:] and r.headers["Content-Range"] == "bytes 2-9/10"
    r = client.get(url, headers={"Range": f"bytes=-{HUGE}"})
    assert r.status_code == 206 and r.content == data
    r = client.get(url, headers={"Range": "bytes=3-4"})
    assert r.status_code == 206 and r.content == b"34"


@pytest.mark.parametrize("value", [HUGE, "-1", "abc", "1e3", "\u00b2"], ids=["huge", "negative", "word", "float", "superscript"])
def test_page_size_must_be_a_bounded_number(client, repo, log, value):
    push_blob(client, repo, b"x")
    for path in ("/v2/_catalog", f"/v2/{repo}/tags/list"):
        assert_error(client.get(path, params={"n": value}), 400, "PAGINATION_NUMBER_INVALID")
    assert_error(client.get("/admin/v1/trash", params={"limit": value}), 400, "PAGINATION_NUMBER_INVALID")


def test_trash_limit_out_of_range(client, log):
    assert_error(client.get("/admin/v1/trash", params={"limit": OVER_INT64}), 400, "PAGINATION_NUMBER_INVALID")
    r = client.get("/admin/v1/trash", params={"limit": str(2**63 - 1)})  # in range: served, clamped
    assert r.status_code == 200 and set(r.json()) == {"images", "tags"}
    r = client.get("/v2/_catalog", params={"n": str(2**63 - 1)})
    assert r.status_code == 200


# ---- 2. JSON nested too deep ----------------------------------------------

@pytest.mark.parametrize("body", [
    DEEP,
    '{"schemaVersion": 2, "annotations": {"a": "b"}, "config": ' + "{" * 1000 + "}" * 1000 + "}",
    '{"schemaVersion": 2, "platform": ' + '{"a":' * 100 + "1" + "}" * 100 + "}",
    "[" * 1000,
], ids=["lists", "config", "platform", "unclosed"])
def test_deeply_nested_manifest(client, repo, log, body):
    r = client.put(f"/v2/{repo}/manifests/v1", content=body, headers={"Content-Type": OCI_MANIFEST})
    assert_error(r, 400, "MANIFEST_INVALID")


def test_brackets_inside_strings_do_not_count(client, repo, log):
    config = b"{}"
    push_blob(client, repo, config)
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "annotations": {"x": "[" * 5000 + "{" * 5000 + '\\"'},
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config),
                      "size": 2}, "layers": []}
    r = client.put(f"/v2/{repo}/manifests/v1", content=json.dumps(doc), headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text


@pytest.fixture
def policy(client):
    name = "bad-input"
    r = client.put(f"/admin/v1/policies/{name}", json={"keep_recent": 1000, "repositories": ["nothing-here/*"]})
    assert r.status_code == 201, r.text
    yield name
    client.delete(f"/admin/v1/policies/{name}")


@pytest.mark.parametrize("body", [
    DEEP,
    '{"items": ' + "[" * 1000 + "]" * 1000 + "}",
    '{"items": [{"spec": ' + '{"a":' * 990 + "1" + "}" * 990 + "}]}",
], ids=["lists", "items", "spec"])
def test_deeply_nested_prune_body(client, policy, log, body):
    assert_error(client.post("/admin/v1/prune", params={"policy": policy}, content=body), 400)


def test_deeply_nested_policy(client, log):
    assert_error(client.put("/admin/v1/policies/deep", content=DEEP), 400)
    assert client.get("/admin/v1/policies").status_code == 200


# ---- 4. durations and counts a policy cannot have -------------------------

@pytest.mark.parametrize("body", [
    '{"keep_pushed_within": NaN}',
    '{"keep_pushed_within": Infinity}',
    '{"keep_pulled_within": -Infinity}',
    '{"keep_pushed_within": 1e300}',
    '{"keep_pushed_within": "' + "9" * 400 + 'd"}',
    '{"keep_pushed_within": "5000000w"}',
    '{"keep_pushed_within": 1' + "0" * 400 + "}",
    '{"keep_recent": 1, "schedule": NaN}',
    '{"keep_recent": 1, "schedule": 1e308}',
    '{"keep_recent": ' + "9" * 30 + "}",
    '{"keep_tag_revisions": ' + OVER_INT64 + "}",
], ids=["nan", "inf", "-inf", "1e300", "400-digit-days", "5e6-weeks", "400-digit-int", "schedule-nan", "schedule-1e308",
        "30-digit-count", "20-digit-count"])
def test_policy_values_out_of_range(client, log, body):
    assert_error(client.put("/admin/v1/policies/odd", content=body), 400)
    r = client.get("/admin/v1/policies")
    assert r.status_code == 200 and "odd" not in r.json()


def test_reasonable_policy_still_accepted(client, log):
    r = client.put("/admin/v1/policies/fine", json={"keep_pushed_within": "3650d", "schedule": 86400.5,
                                                     "keep_recent": 5})
    assert r.status_code == 201, r.text
    assert client.get("/admin/v1/policies").json()["fine"]["keep_pushed_within"] == 3650 * 86400
    assert client.delete("/admin/v1/policies/fine").status_code == 204


# ---- 5. bodies of the wrong shape -----------------------------------------

@pytest.mark.parametrize("body", [
    '{"items": 5}',
    '{"items": "text"}',
    '{"items": [5, null, "x"]}',
    '{"items": [{"metadata": [1]}]}',
    '{"items": [{"metadata": "x"}]}',
    '{"items": [{"spec": {"containers": 5}}]}',
    '{"spec": {"template": {"spec": {"initContainers": true}}}}',
    '{"status": {"containerStatuses": 1.5}}',
    "[1, 2]",
    "[[{\"containers\": 3}]]",
])
def test_prune_body_of_the_wrong_shape(client, policy, log, body):
    assert_error(client.post("/admin/v1/prune", params={"policy": policy}, content=body), 400)


def test_prune_body_still_accepts_kubectl_json_and_lines(client, policy, log):
    pods = {"kind": "List", "items": [{"kind": "Pod", "metadata": {"name": "p", "namespace": "n"},
                                       "spec": {"containers": [{"image": "team/app:v1"}]},
                                       "status": {"containerStatuses": [{"imageID": ""}]}}]}
    for body in (json.dumps(pods), json.dumps(pods["items"][0]), "team/app:v1\n# comment\n"):
        r = client.post("/admin/v1/prune", params={"policy": policy}, content=body)
        assert r.status_code == 200, r.text


def test_prune_body_that_is_not_json_is_an_invalid_source(client, policy, log):
    r = client.post("/admin/v1/prune", params={"policy": policy}, content='{"items": [')
    assert_error(r, 400, "UNSUPPORTED")
    r = client.post("/admin/v1/prune", params={"policy": policy, "ignore_invalid_refs": "true"}, content='{"items": [')
    assert r.status_code == 200, r.text
