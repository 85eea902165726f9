"""The OCI distribution-spec conformance suite (v1.1.x), replayed against a real ``dockyard serve``.

The official suite (``opencontainers/distribution-spec``, folder ``conformance/``) runs four
workflows one after another, all against ONE repository (``OCI_NAMESPACE``): Pull, Push,
Content Discovery, Content Management. State carries over from workflow to workflow (the layer
blob, the tag ``tagtest0``, the tags ``test0``..``test3`` are reused), so this module replays the
specs in the suite's order, each spec one test function named after it, with the spec's title
in the docstring and the suite's acceptance criteria (where the suite accepts "2xx or 405",
so does the test; where it requires exactly 202 or an exact ``Range``, so does the test).

The whole sequence runs once per database backend (the ``server`` fixture) and per value of
``OCI_DELETE_MANIFEST_BEFORE_BLOBS`` (true = the suite's default, false): each such run is one
suite run with its own fresh repository and its own fresh test data (random config authors,
pseudo-random blobs), as a real suite run has. Specs the suite only defines for the other
order are skipped. ``OCI_AUTOMATIC_CROSSMOUNT`` is read from the environment like the suite
does: unset (the default) skips the two "mount without from" specs that depend on it.

Requests are shaped like the suite's client (reggie on resty on Go net/http) sends them:
bodies are streamed (``Transfer-Encoding: chunked``; Go never writes a caller-set
``Content-Length``), a body-less POST/PUT/PATCH carries ``Content-Length: 0``, query
parameters are sorted and appended to the query a ``Location`` already carries, a
``Location`` is followed as its path (decoded) plus raw query, redirects are followed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
import secrets
import uuid
import warnings
from dataclasses import dataclass, field
from urllib.parse import unquote, urlencode, urlsplit

import httpx
import pytest

# Every spec runs for both values of OCI_DELETE_MANIFEST_BEFORE_BLOBS, inside each backend's run.
pytestmark = pytest.mark.parametrize("delete_manifest_before_blobs", [True, False], scope="module",
                                     ids=["manifests-before-blobs", "blobs-before-manifests"])

# ---- constants of the suite (setup.go) -----------------------------------------------------

IMAGE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
IMAGE_INDEX = "application/vnd.oci.image.index.v1+json"
IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
EMPTY_JSON_TYPE = "application/vnd.oci.empty.v1+json"
OCTET_STREAM = "application/octet-stream"

# pull=1<<0 .. contentManagement=1<<3, numWorkflows=1<<4: the suite makes 16 configs and manifests
NUM_WORKFLOWS = 16
TEST_TAG = "tagtest0"
EMPTY_LAYER_TAG = "emptylayer"
NONEXISTENT_MANIFEST = ".INVALID_MANIFEST_NAME"
INVALID_MANIFEST_CONTENT = b"blablabla"
ANNOTATION_KEY = "org.opencontainers.conformance.test"
ARTIFACT_TYPE_A = "application/vnd.nhl.peanut.butter.bagel"
ARTIFACT_TYPE_B = "application/vnd.nba.strawberry.jam.croissant"
ARTIFACT_TYPE_INDEX = "application/vnd.food.stand"
ARTIFACT_TYPE_FILTER = "artifactType"
EMPTY_JSON_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
USER_AGENT = "distribution-spec-conformance-tests"

# The suite's error-code slice is indexed by an iota that starts at 5, so it also holds "".
ERROR_CODES = {"", "BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID",
               "MANIFEST_BLOB_UNKNOWN", "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "MANIFEST_UNVERIFIED",
               "NAME_INVALID", "NAME_UNKNOWN", "SIZE_INVALID", "TAG_INVALID", "UNAUTHORIZED", "DENIED",
               "UNSUPPORTED"}

# The suite's layer: `echo 'you bothered to find out what was in here. Congratulations!' > test.txt;
# tar czvf test.tar.gz test.txt`, kept as base64 (168 bytes).
LAYER_BASE64 = ("H4sIAAAAAAAAA+3OQQrCMBCF4a49xXgBSUnaHMCTRBptQRNpp6i3t0UEV7oqIv7fYgbmzeJpHHSjVy0"
                "WZCa1c/MufWVe94N3RWlrZ72x3k/30nhbFWKWLPU0Dhp6keJ8im//PuU/6pZH2WVtYx8b0Sz7LjWSR5VLG6YRBumSzOlGtjkd+qD"
                "jMWiX07Befbs7AAAAAAAAAAAAAAAAAPyzO34MnqoAKAAA")
LAYER_DIGEST = "sha256:48acff1d91752e957527c1b5416e7376d910bcacf01b9441175f8c270e35c183"

# resty copies a JSON Content-Type into Accept when the request sets no Accept
_RESTY_JSON_TYPE = re.compile(r"(?i:(application|text)/(json|.*\+json|json\-.*)(;|$))")


def _go_parse_bool(value: str) -> bool:
    """strconv.ParseBool, with an invalid value counting as false (the suite ignores the error)."""
    return value in ("1", "t", "T", "TRUE", "true", "True")


_AUTO_CROSSMOUNT_ENV = os.environ.get("OCI_AUTOMATIC_CROSSMOUNT")
RUN_AUTOMATIC_CROSSMOUNT_TEST = _AUTO_CROSSMOUNT_ENV is not None
AUTOMATIC_CROSSMOUNT_ENABLED = _go_parse_bool(_AUTO_CROSSMOUNT_ENV or "")


# ---- test data, built the way the suite builds it -------------------------------------------

def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


DUMMY_DIGEST = sha256(b"hello world")


def go_json(doc) -> bytes:
    """``json.MarshalIndent(v, "", "\\t")``: tab-indented, fields in the order they are given."""
    return json.dumps(doc, indent="\t").encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def descriptor(media_type: str, content: bytes, *, annotations: dict | None = None, data: bytes | None = None,
               artifact_type: str | None = None, new_field: bytes | None = None) -> dict:
    """The suite's descriptor struct: mediaType, digest, size, [annotations], [data], [artifactType],
    and ``newUnspecifiedField`` always (no omitempty: ``null`` when unset)."""
    d: dict = {"mediaType": media_type, "digest": sha256(content), "size": len(content)}
    if annotations:
        d["annotations"] = annotations
    if data:
        d["data"] = b64(data)
    if artifact_type:
        d["artifactType"] = artifact_type
    d["newUnspecifiedField"] = b64(new_field) if new_field else None
    return d


def manifest_json(config: dict, layers: list[dict], *, media_type: str | None = IMAGE_MANIFEST,
                  artifact_type: str | None = None, subject: dict | None = None,
                  annotations: dict | None = None) -> bytes:
    doc: dict = {"schemaVersion": 2}
    if media_type:
        doc["mediaType"] = media_type
    if artifact_type:
        doc["artifactType"] = artifact_type
    doc["config"] = config
    doc["layers"] = layers
    if subject:
        doc["subject"] = subject
    if annotations:
        doc["annotations"] = annotations
    return go_json(doc)


def index_json(manifests: list[dict], *, artifact_type: str | None = None, subject: dict | None = None,
               annotations: dict | None = None) -> bytes:
    doc: dict = {"schemaVersion": 2, "mediaType": IMAGE_INDEX}
    if artifact_type:
        doc["artifactType"] = artifact_type
    doc["manifests"] = manifests
    if subject:
        doc["subject"] = subject
    if annotations:
        doc["annotations"] = annotations
    return go_json(doc)


def random_author(n: int = 16) -> str:
    letters = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-"
    return "".join(secrets.choice(letters) for _ in range(n))


def random_blob(size: int, seed: int) -> bytes:
    """A reproducible pseudo-random blob for a seed (the suite uses Go's math/rand)."""
    return random.Random(seed).randbytes(size)


@dataclass
class Blob:
    content: bytes

    @property
    def digest(self) -> str:
        return sha256(self.content)

    @property
    def length(self) -> str:
        return str(len(self.content))


class SuiteData:
    """Everything setup.go's init() builds."""

    def __init__(self, seed: int):
        self.seed = seed
        # a unique config per workflow: a fresh random author on every run
        self.configs = [Blob(go_json({
            "author": random_author(),
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
        })) for _ in range(NUM_WORKFLOWS)]
        self.layer = Blob(base64.b64decode(LAYER_BASE64))
        layers = [descriptor(LAYER_TAR_GZIP, self.layer.content)]

        def config_descriptor(config: Blob) -> dict:
            # the config's own bytes in "data", and a field no spec defines
            return descriptor(IMAGE_CONFIG, config.content, data=config.content, new_field=b"hello world")

        self.manifests = [Blob(manifest_json(config_descriptor(c), layers)) for c in self.configs]
        # used in push: no mediaType field, no layers
        self.empty_layer_manifest = Blob(manifest_json(config_descriptor(self.configs[1]), [], media_type=None))

        self.blob_a = Blob(random_blob(42, seed + 1))
        self.setup_chunked_blob(42)

        # referrers
        self.empty_json = Blob(b"{}")
        empty = descriptor(EMPTY_JSON_TYPE, self.empty_json.content)
        self.ref_blob_a = Blob(b"NHL Peanut Butter on my NHL bagel")
        self.ref_blob_b = Blob(b"NBA Strawberry Jam on my NBA croissant")
        subject4 = descriptor(IMAGE_MANIFEST, self.manifests[4].content)
        subject3 = descriptor(IMAGE_MANIFEST, self.manifests[3].content)
        self.annotation_values: dict[str, str] = {}

        def referrer(config: dict, layer: dict, subject: dict, annotation: str | None,
                     artifact_type: str | None = None) -> Blob:
            blob = Blob(manifest_json(config, [layer], artifact_type=artifact_type, subject=subject,
                                      annotations={ANNOTATION_KEY: annotation} if annotation else None))
            if annotation:
                self.annotation_values[blob.digest] = annotation
            return blob

        # artifactType carried by config.mediaType
        self.refs_a_config = referrer(descriptor(ARTIFACT_TYPE_A, self.ref_blob_a.content), empty, subject4,
                                      "test config a")
        self.refs_b_config = referrer(descriptor(ARTIFACT_TYPE_B, self.ref_blob_b.content), empty, subject4,
                                      "test config b")
        # artifactType field, config = the empty JSON
        self.refs_a_layer = referrer(empty, descriptor(ARTIFACT_TYPE_A, self.ref_blob_a.content), subject4,
                                     "test layer a", artifact_type=ARTIFACT_TYPE_A)
        self.refs_b_layer = referrer(empty, descriptor(ARTIFACT_TYPE_B, self.ref_blob_b.content), subject4,
                                     "test layer b", artifact_type=ARTIFACT_TYPE_B)
        # like B, but its subject (manifests[3]) is not pushed: a dangling subject; no annotations
        self.refs_c_layer = referrer(empty, descriptor(ARTIFACT_TYPE_B, self.ref_blob_b.content), subject3,
                                     None, artifact_type=ARTIFACT_TYPE_B)
        self.refs_index = Blob(index_json(
            [descriptor(IMAGE_MANIFEST, self.refs_a_config.content),
             descriptor(IMAGE_MANIFEST, self.refs_a_layer.content)],
            artifact_type=ARTIFACT_TYPE_INDEX, subject=subject4, annotations={ANNOTATION_KEY: "test index"}))
        self.annotation_values[self.refs_index.digest] = "test index"

    def setup_chunked_blob(self, size: int) -> None:
        self.blob_b = Blob(random_blob(size, self.seed + 2))
        half = size // 2 + 1
        self.blob_b_chunk1 = self.blob_b.content[:half]
        self.blob_b_chunk2 = self.blob_b.content[half:]
        self.blob_b_chunk1_range = f"0-{len(self.blob_b_chunk1) - 1}"
        self.blob_b_chunk2_range = f"{len(self.blob_b_chunk1)}-{size - 1}"


# ---- the suite's client ------------------------------------------------------------------------

def relative_location(resp: httpx.Response | None) -> str:
    """reggie's GetRelativeLocation: the Location's (decoded) path plus its raw query."""
    assert resp is not None, "no earlier response to take a Location from"
    u = urlsplit(resp.headers.get("Location", ""))
    path = unquote(u.path)
    if u.query:
        path += "?" + u.query
    return path


def describe(resp: httpx.Response, expected: str) -> str:
    req = resp.request
    shown = {k: v for k, v in resp.headers.items()
             if k.lower() in ("location", "range", "content-type", "docker-content-digest", "oci-subject",
                              "oci-filters-applied", "link", "content-length", "oci-chunk-min-length")}
    return (f"{req.method} {req.url} -> {resp.status_code}, expected {expected}\n"
            f"  response headers: {shown}\n  body: {resp.text[:800]!r}")


def expect_status(resp: httpx.Response, *codes: int, success: bool = False) -> None:
    """``Equal(c)`` / ``SatisfyAny(...)`` on the status; ``success`` admits any 2xx."""
    s = resp.status_code
    allowed = " or ".join((["2xx"] if success else []) + [str(c) for c in codes])
    assert (success and 200 <= s < 300) or s in codes, describe(resp, allowed)


def go_errors(resp: httpx.Response) -> list[dict]:
    """reggie's Response.Errors(): the OCI error envelope, which must hold at least one error."""
    try:
        doc = json.loads(resp.text)
    except ValueError as exc:
        raise AssertionError(describe(resp, "an OCI error body") + f"\n  not JSON: {exc}") from exc
    errors = doc.get("errors") if isinstance(doc, dict) else None
    assert isinstance(errors, list) and errors, describe(resp, "a non-empty errors array")
    assert all(isinstance(e, dict) and isinstance(e.get("code", ""), str) for e in errors), \
        describe(resp, "errors with string codes")
    return errors


def go_tag_list(resp: httpx.Response, *, strict: bool) -> list[str]:
    """Unmarshal into ``TagList{Name, Tags}``; ``strict`` fails on a body that does not parse,
    otherwise (the suite's getTagList) a bad body is an empty list."""
    try:
        doc = json.loads(resp.text)
        if doc is None:
            return []
        if not isinstance(doc, dict):
            raise ValueError("not an object")
        tags = doc.get("tags")
        if tags is None:
            return []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ValueError("tags is not a list of strings")
        return tags
    except ValueError as exc:
        if strict:
            raise AssertionError(describe(resp, "a JSON tag list") + f"\n  {exc}") from exc
        return []


def go_index_manifests(resp: httpx.Response) -> list[dict]:
    """Unmarshal the body into the suite's index struct and return its manifests."""
    try:
        doc = json.loads(resp.text)
    except ValueError as exc:
        raise AssertionError(describe(resp, "a JSON image index") + f"\n  {exc}") from exc
    if doc is None:
        return []
    assert isinstance(doc, dict), describe(resp, "a JSON image index object")
    manifests = doc.get("manifests") or []
    assert isinstance(manifests, list) and all(isinstance(m, dict) for m in manifests), \
        describe(resp, "a manifests array of descriptors")
    return manifests


def check_annotations(resp: httpx.Response, manifests: list[dict], values: dict[str, str]) -> None:
    for m in manifests:
        annotations = m.get("annotations") or {}
        assert len(annotations) == 1, describe(resp, f"exactly one annotation on {m.get('digest')}")
        assert annotations.get(ANNOTATION_KEY, "") == values.get(m.get("digest", ""), ""), \
            describe(resp, f"annotation {ANNOTATION_KEY}={values.get(m.get('digest', ''), '')!r} "
                           f"on {m.get('digest')}")


@dataclass
class SuiteRun:
    http: httpx.Client
    namespace: str
    crossmount_namespace: str
    delete_manifest_before_blobs: bool
    data: SuiteData
    # Pull
    pull_tag: str = ""
    # Push
    last_response: httpx.Response | None = None
    prev_response: httpx.Response | None = None
    empty_layer_manifest_ref: str = ""
    # Content Discovery
    discovery_num_tags: int = 4
    discovery_tag_list: list[str] = field(default_factory=list)
    # Content Management
    tag_to_delete: str = ""
    management_num_tags: int = 0
    blob_delete_allowed: bool = True

    def request(self, method: str, path: str, *, name: str | None = None, headers: dict | None = None,
                params: dict | None = None, body: bytes | None = None) -> httpx.Response:
        """One reggie request: ``<name>`` filled in, query parameters sorted (url.Values.Encode)
        and appended to any query the path already has, the body streamed (chunked)."""
        path = path.replace("<name>", name or self.namespace)
        if params:
            path += ("&" if "?" in path else "?") + urlencode(sorted(params.items()))
        hdrs = dict(headers or {})
        # Go's net/http never writes a caller-set Content-Length: it streams the body instead
        hdrs.pop("Content-Length", None)
        ct = hdrs.get("Content-Type", "")
        if "Accept" not in hdrs and ct and _RESTY_JSON_TYPE.search(ct):
            hdrs["Accept"] = ct
        content = None if body is None else iter([body])
        return self.http.request(method, path, headers=hdrs, content=content)

    def post_then_put(self, blob: Blob) -> httpx.Response:
        """The suite's two-step blob push: POST (status unchecked), then PUT <Location>?digest= with the body."""
        resp = self.request("POST", "/v2/<name>/blobs/uploads/")
        return self.request("PUT", relative_location(resp), params={"digest": blob.digest},
                            headers={"Content-Type": OCTET_STREAM, "Content-Length": blob.length},
                            body=blob.content)

    def put_manifest(self, reference: str, content: bytes, media_type: str = IMAGE_MANIFEST) -> httpx.Response:
        return self.request("PUT", f"/v2/<name>/manifests/{reference}", headers={"Content-Type": media_type},
                            body=content)


@pytest.fixture(scope="module")
def oci(server, delete_manifest_before_blobs):
    """One suite run: a fresh repository, fresh test data, one client."""
    data = SuiteData(seed=random.randrange(1, 2 ** 62))
    assert data.layer.digest == LAYER_DIGEST and len(data.layer.content) == 168
    namespace = f"conformance/run-{uuid.uuid4().hex[:12]}"
    crossmount = f"conformance-{uuid.uuid4()}"  # the suite's default OCI_CROSSMOUNT_NAMESPACE
    http = httpx.Client(base_url=server.url, timeout=60, follow_redirects=True)
    del http.headers["Accept"]  # Go sends none
    http.headers["User-Agent"] = USER_AGENT
    http.headers["Accept-Encoding"] = "gzip"
    with http:
        yield SuiteRun(http, namespace, crossmount, delete_manifest_before_blobs, data)


def only_if_manifests_before_blobs(oci: SuiteRun) -> None:
    if not oci.delete_manifest_before_blobs:
        pytest.skip("the suite defines this spec here only when OCI_DELETE_MANIFEST_BEFORE_BLOBS is true")


def only_if_blobs_before_manifests(oci: SuiteRun) -> None:
    if oci.delete_manifest_before_blobs:
        pytest.skip("the suite defines this spec here only when OCI_DELETE_MANIFEST_BEFORE_BLOBS is false")


# =============================================================================================
# 01 Pull
# =============================================================================================

# ---- Setup ----

def test_pull_setup_populate_registry_with_test_blob_config0(oci):
    """Populate registry with test blob

    Pull / Setup (configs[0]): POST, then PUT <Location>?digest=; any 2xx."""
    resp = oci.post_then_put(oci.data.configs[0])
    expect_status(resp, success=True)


def test_pull_setup_populate_registry_with_test_blob_config1(oci):
    """Populate registry with test blob

    Pull / Setup (second spec of that title, configs[1])."""
    resp = oci.post_then_put(oci.data.configs[1])
    expect_status(resp, success=True)


def test_pull_setup_populate_registry_with_test_layer(oci):
    """Populate registry with test layer

    Pull / Setup."""
    resp = oci.post_then_put(oci.data.layer)
    expect_status(resp, success=True)


def test_pull_setup_populate_registry_with_test_manifest_by_tag(oci):
    """Populate registry with test manifest

    Pull / Setup: PUT manifests[0] to tag tagtest0."""
    oci.pull_tag = TEST_TAG
    resp = oci.put_manifest(oci.pull_tag, oci.data.manifests[0].content)
    expect_status(resp, success=True)


def test_pull_setup_populate_registry_with_test_manifest_by_digest(oci):
    """Populate registry with test manifest

    Pull / Setup (second spec of that title): PUT manifests[1] by its digest."""
    resp = oci.put_manifest(oci.data.manifests[1].digest, oci.data.manifests[1].content)
    expect_status(resp, success=True)


def test_pull_setup_get_tag_name_from_environment(oci):
    """Get tag name from environment

    Pull / Setup: RunOnlyIfNot(runPullSetup). This replay always runs the setup."""
    pytest.skip("runs only when OCI_TAG_NAME, OCI_MANIFEST_DIGEST and OCI_BLOB_DIGEST are all set")


# ---- Pull blobs ----

def test_pull_head_request_to_nonexistent_blob_should_result_in_404_response(oci):
    """HEAD request to nonexistent blob should result in 404 response"""
    resp = oci.request("HEAD", f"/v2/<name>/blobs/{DUMMY_DIGEST}")
    expect_status(resp, 404)


def test_pull_head_request_to_existing_blob_should_yield_200(oci):
    """HEAD request to existing blob should yield 200"""
    resp = oci.request("HEAD", f"/v2/<name>/blobs/{oci.data.configs[0].digest}")
    expect_status(resp, 200)
    if h := resp.headers.get("Docker-Content-Digest"):
        assert h == oci.data.configs[0].digest, describe(resp, "Docker-Content-Digest = configs[0]")


def test_pull_get_nonexistent_blob_should_result_in_404_response(oci):
    """GET nonexistent blob should result in 404 response"""
    resp = oci.request("GET", f"/v2/<name>/blobs/{DUMMY_DIGEST}")
    expect_status(resp, 404)


def test_pull_get_request_to_existing_blob_url_should_yield_200(oci):
    """GET request to existing blob URL should yield 200"""
    resp = oci.request("GET", f"/v2/<name>/blobs/{oci.data.configs[0].digest}")
    expect_status(resp, 200)


# ---- Pull manifests ----

def test_pull_head_request_to_nonexistent_manifest_should_return_404(oci):
    """HEAD request to nonexistent manifest should return 404"""
    resp = oci.request("HEAD", f"/v2/<name>/manifests/{NONEXISTENT_MANIFEST}")
    expect_status(resp, 404)


def test_pull_head_request_to_manifest0_path_digest_should_yield_200_response(oci):
    """HEAD request to manifest[0] path (digest) should yield 200 response"""
    resp = oci.request("HEAD", f"/v2/<name>/manifests/{oci.data.manifests[0].digest}",
                       headers={"Accept": IMAGE_MANIFEST})
    expect_status(resp, 200)
    if h := resp.headers.get("Docker-Content-Digest"):
        assert h == oci.data.manifests[0].digest, describe(resp, "Docker-Content-Digest = manifests[0]")


def test_pull_head_request_to_manifest1_path_digest_should_yield_200_response(oci):
    """HEAD request to manifest[1] path (digest) should yield 200 response"""
    resp = oci.request("HEAD", f"/v2/<name>/manifests/{oci.data.manifests[1].digest}",
                       headers={"Accept": IMAGE_MANIFEST})
    expect_status(resp, 200)
    if h := resp.headers.get("Docker-Content-Digest"):
        assert h == oci.data.manifests[1].digest, describe(resp, "Docker-Content-Digest = manifests[1]")


def test_pull_head_request_to_manifest_path_tag_should_yield_200_response(oci):
    """HEAD request to manifest path (tag) should yield 200 response"""
    assert oci.pull_tag != ""
    resp = oci.request("HEAD", f"/v2/<name>/manifests/{oci.pull_tag}", headers={"Accept": IMAGE_MANIFEST})
    expect_status(resp, 200)
    if h := resp.headers.get("Docker-Content-Digest"):
        assert h == oci.data.manifests[0].digest, describe(resp, "Docker-Content-Digest = manifests[0]")


def test_pull_get_nonexistent_manifest_should_return_404(oci):
    """GET nonexistent manifest should return 404"""
    resp = oci.request("GET", f"/v2/<name>/manifests/{NONEXISTENT_MANIFEST}")
    expect_status(resp, 404)


def test_pull_get_request_to_manifest0_path_digest_should_yield_200_response(oci):
    """GET request to manifest[0] path (digest) should yield 200 response"""
    resp = oci.request("GET", f"/v2/<name>/manifests/{oci.data.manifests[0].digest}",
                       headers={"Accept": IMAGE_MANIFEST})
    expect_status(resp, 200)


def test_pull_get_request_to_manifest1_path_digest_should_yield_200_response(oci):
    """GET request to manifest[1] path (digest) should yield 200 response"""
    resp = oci.request("GET", f"/v2/<name>/manifests/{oci.data.manifests[1].digest}",
                       headers={"Accept": IMAGE_MANIFEST})
    expect_status(resp, 200)


def test_pull_get_request_to_manifest_path_tag_should_yield_200_response(oci):
    """GET request to manifest path (tag) should yield 200 response"""
    assert oci.pull_tag != ""
    resp = oci.request("GET", f"/v2/<name>/manifests/{oci.pull_tag}", headers={"Accept": IMAGE_MANIFEST})
    expect_status(resp, 200)


# ---- Error codes ----

def test_pull_400_response_body_should_contain_oci_conforming_json_message(oci):
    """400 response body should contain OCI-conforming JSON message

    Pull / Error codes: a GET (with a body) of manifests/sha256:totallywrong; 400 or 404."""
    resp = oci.request("GET", "/v2/<name>/manifests/sha256:totallywrong",
                       headers={"Content-Type": IMAGE_MANIFEST}, body=INVALID_MANIFEST_CONTENT)
    expect_status(resp, 400, 404)
    if resp.status_code == 400:
        errors = go_errors(resp)
        assert errors[0].get("code", "") in ERROR_CODES, describe(resp, "a known error code")


# ---- Teardown ----

def _pull_delete_manifest(oci: SuiteRun, i: int) -> None:
    resp = oci.request("DELETE", f"/v2/<name>/manifests/{oci.data.manifests[i].digest}")
    expect_status(resp, 405, success=True)


def _delete_blob_2xx_404_405(oci: SuiteRun, blob: Blob) -> None:
    resp = oci.request("DELETE", f"/v2/<name>/blobs/{blob.digest}")
    expect_status(resp, 404, 405, success=True)


def test_pull_teardown_delete_manifest0_created_in_setup_before_blobs(oci):
    """Delete manifest[0] created in setup

    Pull / Teardown, OCI_DELETE_MANIFEST_BEFORE_BLOBS=true: 2xx or 405 (not 404)."""
    only_if_manifests_before_blobs(oci)
    _pull_delete_manifest(oci, 0)


def test_pull_teardown_delete_manifest1_created_in_setup_before_blobs(oci):
    """Delete manifest[1] created in setup

    Pull / Teardown, OCI_DELETE_MANIFEST_BEFORE_BLOBS=true: 2xx or 405 (not 404)."""
    only_if_manifests_before_blobs(oci)
    _pull_delete_manifest(oci, 1)


def test_pull_teardown_delete_config0_blob_created_in_setup(oci):
    """Delete config[0] blob created in setup"""
    _delete_blob_2xx_404_405(oci, oci.data.configs[0])


def test_pull_teardown_delete_config1_blob_created_in_setup(oci):
    """Delete config[1] blob created in setup"""
    _delete_blob_2xx_404_405(oci, oci.data.configs[1])


def test_pull_teardown_delete_layer_blob_created_in_setup(oci):
    """Delete layer blob created in setup"""
    _delete_blob_2xx_404_405(oci, oci.data.layer)


def test_pull_teardown_delete_manifest0_created_in_setup_after_blobs(oci):
    """Delete manifest[0] created in setup

    Pull / Teardown, OCI_DELETE_MANIFEST_BEFORE_BLOBS=false: 2xx or 405 (not 404)."""
    only_if_blobs_before_manifests(oci)
    _pull_delete_manifest(oci, 0)


def test_pull_teardown_delete_manifest1_created_in_setup_after_blobs(oci):
    """Delete manifest[1] created in setup

    Pull / Teardown, OCI_DELETE_MANIFEST_BEFORE_BLOBS=false: 2xx or 405 (not 404)."""
    only_if_blobs_before_manifests(oci)
    _pull_delete_manifest(oci, 1)


# =============================================================================================
# 02 Push (no setup)
# =============================================================================================

# ---- Blob Upload Streamed ----

def test_push_patch_request_with_blob_in_body_should_yield_202_response(oci):
    """PATCH request with blob in body should yield 202 response

    Push / Blob Upload Streamed: POST, then PATCH <Location> with testBlobA and no Content-Range."""
    resp = oci.request("POST", "/v2/<name>/blobs/uploads/")
    assert resp.headers.get("Location"), describe(resp, "a Location")
    resp = oci.request("PATCH", relative_location(resp), headers={"Content-Type": OCTET_STREAM},
                       body=oci.data.blob_a.content)
    expect_status(resp, 202)
    oci.last_response = resp


def test_push_put_request_to_session_url_with_digest_should_yield_201_response(oci):
    """PUT request to session URL with digest should yield 201 response

    Push / Blob Upload Streamed: PUT <PATCH Location>?digest=testBlobA, no body."""
    assert oci.last_response is not None
    resp = oci.request("PUT", relative_location(oci.last_response), params={"digest": oci.data.blob_a.digest},
                       headers={"Content-Type": OCTET_STREAM, "Content-Length": oci.data.blob_a.length})
    expect_status(resp, 201)
    assert resp.headers.get("Location"), describe(resp, "a Location")


# ---- Blob Upload Monolithic ----

def test_push_get_nonexistent_blob_should_result_in_404_response(oci):
    """GET nonexistent blob should result in 404 response

    Push / Blob Upload Monolithic."""
    resp = oci.request("GET", f"/v2/<name>/blobs/{DUMMY_DIGEST}")
    expect_status(resp, 404)


def test_push_post_request_with_digest_and_blob_should_yield_a_201_or_202(oci):
    """POST request with digest and blob should yield a 201 or 202"""
    config = oci.data.configs[1]
    resp = oci.request("POST", "/v2/<name>/blobs/uploads/", params={"digest": config.digest},
                       headers={"Content-Length": config.length, "Content-Type": OCTET_STREAM},
                       body=config.content)
    assert resp.headers.get("Location"), describe(resp, "a Location")
    expect_status(resp, 201, 202)
    oci.last_response = resp


def test_push_get_request_to_blob_url_from_prior_request_should_yield_200_or_404_based_on_response_code(oci):
    """GET request to blob URL from prior request should yield 200 or 404 based on response code"""
    assert oci.last_response is not None
    resp = oci.request("GET", f"/v2/<name>/blobs/{oci.data.configs[1].digest}")
    if oci.last_response.status_code == 202:
        expect_status(resp, 404)
    else:
        expect_status(resp, 200)


def test_push_post_request_should_yield_a_session_id(oci):
    """POST request should yield a session ID"""
    resp = oci.request("POST", "/v2/<name>/blobs/uploads/")
    expect_status(resp, 202)
    oci.last_response = resp


def test_push_put_upload_of_a_blob_should_yield_a_201_response(oci):
    """PUT upload of a blob should yield a 201 Response"""
    config = oci.data.configs[1]
    resp = oci.request("PUT", relative_location(oci.last_response), params={"digest": config.digest},
                       headers={"Content-Length": config.length, "Content-Type": OCTET_STREAM},
                       body=config.content)
    assert resp.headers.get("Location"), describe(resp, "a Location")
    expect_status(resp, 201)


def test_push_get_request_to_existing_blob_should_yield_200_response(oci):
    """GET request to existing blob should yield 200 response"""
    resp = oci.request("GET", f"/v2/<name>/blobs/{oci.data.configs[1].digest}")
    expect_status(resp, 200)


def test_push_put_upload_of_a_layer_blob_should_yield_a_201_response(oci):
    """PUT upload of a layer blob should yield a 201 Response"""
    layer = oci.data.layer
    resp = oci.request("POST", "/v2/<name>/blobs/uploads/")
    resp = oci.request("PUT", relative_location(resp), params={"digest": layer.digest},
                       headers={"Content-Length": layer.length, "Content-Type": OCTET_STREAM},
                       body=layer.content)
    assert resp.headers.get("Location"), describe(resp, "a Location")
    expect_status(resp, 201)


def test_push_get_request_to_existing_layer_should_yield_200_response(oci):
    """GET request to existing layer should yield 200 response"""
    resp = oci.request("GET", f"/v2/<name>/blobs/{oci.data.layer.digest}")
    expect_status(resp, 200)


# ---- Blob Upload Chunked ----

def test_push_out_of_order_blob_upload_should_return_416(oci):
    """Out-of-order blob upload should return 416

    Push / Blob Upload Chunked: on a fresh session, PATCH the second chunk first (Content-Range 22-41)."""
    d = oci.data
    resp = oci.request("POST", "/v2/<name>/blobs/uploads/", headers={"Content-Length": "0"})
    assert resp.headers.get("Location"), describe(resp, "a Location")
    # rebuild the chunked blob if the registry's minimum chunk is larger than ours
    if min_size := resp.headers.get("OCI-Chunk-Min-Length"):
        assert re.fullmatch(r"[+-]?[0-9]+", min_size), describe(resp, "an integer OCI-Chunk-Min-Length")  # Atoi
        if int(min_size) > len(d.blob_b_chunk1):
            d.setup_chunked_blob(int(min_size) * 2 - 2)
    resp = oci.request("PATCH", relative_location(resp),
                       headers={"Content-Type": OCTET_STREAM, "Content-Length": str(len(d.blob_b_chunk2)),
                                "Content-Range": d.blob_b_chunk2_range},
                       body=d.blob_b_chunk2)
    expect_status(resp, 416)


def test_push_patch_request_with_first_chunk_should_return_202(oci):
    """PATCH request with first chunk should return 202

    Push / Blob Upload Chunked: Content-Range 0-21; the response Range must be exactly 0-21."""
    d = oci.data
    resp = oci.request("POST", "/v2/<name>/blobs/uploads/", headers={"Content-Length": "0"})
    assert resp.headers.get("Location"), describe(resp, "a Location")
    oci.prev_response = resp
    resp = oci.request("PATCH", relative_location(resp),
                       headers={"Content-Type": OCTET_STREAM, "Content-Length": str(len(d.blob_b_chunk1)),
                                "Content-Range": d.blob_b_chunk1_range},
                       body=d.blob_b_chunk1)
    expect_status(resp, 202)
    assert resp.headers.get("Range", "") == d.blob_b_chunk1_range, \
        describe(resp, f"Range: {d.blob_b_chunk1_range}")
    oci.last_response = resp


def test_push_retry_previous_blob_chunk_should_return_416(oci):
    """Retry previous blob chunk should return 416

    Push / Blob Upload Chunked: the first chunk again, to the POST's Location."""
    d = oci.data
    resp = oci.request("PATCH", relative_location(oci.prev_response),
                       headers={"Content-Type": OCTET_STREAM, "Content-Length": str(len(d.blob_b_chunk1)),
                                "Content-Range": d.blob_b_chunk1_range},
                       body=d.blob_b_chunk1)
    expect_status(resp, 416)


def test_push_get_on_stale_blob_upload_should_return_204_with_a_range_and_location(oci):
    """Get on stale blob upload should return 204 with a range and location"""
    resp = oci.request("GET", relative_location(oci.prev_response))
    expect_status(resp, 204)
    assert resp.headers.get("Location"), describe(resp, "a Location")
    assert resp.headers.get("Range", "") == oci.data.blob_b_chunk1_range, \
        describe(resp, f"Range: {oci.data.blob_b_chunk1_range}")
    oci.last_response = resp


def test_push_patch_request_with_second_chunk_should_return_202(oci):
    """PATCH request with second chunk should return 202"""
    d = oci.data
    resp = oci.request("PATCH", relative_location(oci.last_response),
                       headers={"Content-Length": str(len(d.blob_b_chunk2)), "Content-Range": d.blob_b_chunk2_range,
                                "Content-Type": OCTET_STREAM},
                       body=d.blob_b_chunk2)
    expect_status(resp, 202)
    assert resp.headers.get("Location"), describe(resp, "a Location")
    oci.last_response = resp


def test_push_put_request_with_digest_should_return_201(oci):
    """PUT request with digest should return 201"""
    resp = oci.request("PUT", relative_location(oci.last_response), params={"digest": oci.data.blob_b.digest},
                       headers={"Content-Length": "0", "Content-Type": OCTET_STREAM})
    expect_status(resp, 201)
    assert resp.headers.get("Location"), describe(resp, "a Location")


# ---- Cross-Repository Blob Mount ----

def test_push_cross_mounting_of_a_blob_without_the_from_argument_should_yield_session_id(oci):
    """Cross-mounting of a blob without the from argument should yield session id

    Push / Cross-Repository Blob Mount: POST /v2/<crossmount>/blobs/uploads/?mount=<dummy digest>."""
    resp = oci.request("POST", "/v2/<name>/blobs/uploads/", name=oci.crossmount_namespace,
                       params={"mount": DUMMY_DIGEST})
    expect_status(resp, 202)
    assert resp.headers.get("Location"), describe(resp, "a Location")


def test_push_post_request_to_mount_another_repositorys_blob_should_return_201_or_202(oci):
    """POST request to mount another repository's blob should return 201 or 202"""
    resp = oci.request("POST", "/v2/<name>/blobs/uploads/", name=oci.crossmount_namespace,
                       params={"mount": oci.data.blob_a.digest, "from": oci.namespace})
    expect_status(resp, 201, 202)
    oci.last_response = resp


def test_push_get_request_to_test_digest_within_cross_mount_namespace_should_return_200(oci):
    """GET request to test digest within cross-mount namespace should return 200

    Runs only if the mount returned 201; its Location must be exactly /v2/<crossmount>/blobs/<digest>."""
    assert oci.last_response is not None
    if oci.last_response.status_code != 201:
        pytest.skip("runs only if the mount returned 201")
    expected = f"/v2/{oci.crossmount_namespace}/blobs/{oci.data.blob_a.digest}"
    assert relative_location(oci.last_response) == expected, describe(oci.last_response, f"Location {expected}")
    resp = oci.request("GET", relative_location(oci.last_response))
    expect_status(resp, 200)


def test_push_cross_mounting_of_nonexistent_blob_should_yield_session_id(oci):
    """Cross-mounting of nonexistent blob should yield session id

    Runs only if the mount returned 202."""
    assert oci.last_response is not None
    if oci.last_response.status_code != 202:
        pytest.skip("runs only if the mount returned 202")
    prefix = f"/v2/{oci.crossmount_namespace}/blobs/uploads/"
    assert relative_location(oci.last_response).startswith(prefix), \
        describe(oci.last_response, f"a Location under {prefix}")


def test_push_cross_mounting_without_from_and_automatic_content_discovery_enabled_should_return_a_201(oci):
    """Cross-mounting without from, and automatic content discovery enabled should return a 201"""
    if not RUN_AUTOMATIC_CROSSMOUNT_TEST:
        pytest.skip("runs only when OCI_AUTOMATIC_CROSSMOUNT is set")
    assert oci.last_response is not None
    if oci.last_response.status_code != 201:
        pytest.skip("runs only if the mount returned 201")
    if not AUTOMATIC_CROSSMOUNT_ENABLED:
        pytest.skip("runs only when OCI_AUTOMATIC_CROSSMOUNT is true")
    resp = oci.request("POST", "/v2/<name>/blobs/uploads/", name=oci.crossmount_namespace,
                       params={"mount": oci.data.blob_a.digest})
    expect_status(resp, 201)


def test_push_cross_mounting_without_from_and_automatic_content_discovery_disabled_should_return_a_202(oci):
    """Cross-mounting without from, and automatic content discovery disabled should return a 202"""
    if not RUN_AUTOMATIC_CROSSMOUNT_TEST:
        pytest.skip("runs only when OCI_AUTOMATIC_CROSSMOUNT is set")
    assert oci.last_response is not None
    if oci.last_response.status_code != 201:
        pytest.skip("runs only if the mount returned 201")
    if AUTOMATIC_CROSSMOUNT_ENABLED:
        pytest.skip("runs only when OCI_AUTOMATIC_CROSSMOUNT is false")
    resp = oci.request("POST", "/v2/<name>/blobs/uploads/", name=oci.crossmount_namespace,
                       params={"mount": oci.data.blob_a.digest})
    expect_status(resp, 202)


# ---- Manifest Upload ----

def test_push_get_nonexistent_manifest_should_return_404(oci):
    """GET nonexistent manifest should return 404

    Push / Manifest Upload."""
    resp = oci.request("GET", f"/v2/<name>/manifests/{NONEXISTENT_MANIFEST}")
    expect_status(resp, 404)


def test_push_put_should_accept_a_manifest_upload(oci):
    """PUT should accept a manifest upload

    Push / Manifest Upload: manifests[1] to tags test0..test3, each exactly 201 with a Location."""
    for i in range(4):
        resp = oci.put_manifest(f"test{i}", oci.data.manifests[1].content)
        assert resp.headers.get("Location"), describe(resp, "a Location")
        expect_status(resp, 201)


def test_push_registry_should_accept_a_manifest_upload_with_no_layers(oci):
    """Registry should accept a manifest upload with no layers

    Push / Manifest Upload: a status other than 201 only warns, as in the suite."""
    resp = oci.put_manifest(EMPTY_LAYER_TAG, oci.data.empty_layer_manifest.content)
    if resp.status_code == 201:
        location = resp.headers.get("Location", "")
        oci.empty_layer_manifest_ref = location
        assert location, describe(resp, "a Location")
    else:
        warnings.warn(f"image manifest with no layers is not supported: {describe(resp, '201')}")


def test_push_get_request_to_manifest_url_digest_should_yield_200_response(oci):
    """GET request to manifest URL (digest) should yield 200 response"""
    resp = oci.request("GET", f"/v2/<name>/manifests/{oci.data.manifests[1].digest}",
                       headers={"Accept": IMAGE_MANIFEST})
    expect_status(resp, 200)


# ---- Teardown ----

def _push_delete_manifests(oci: SuiteRun) -> None:
    resp = oci.request("DELETE", f"/v2/<name>/manifests/{oci.data.manifests[1].digest}")
    expect_status(resp, 405, success=True)
    if oci.empty_layer_manifest_ref:
        resp = oci.request("DELETE", f"/v2/<name>/manifests/{oci.data.empty_layer_manifest.digest}")
        expect_status(resp, 405, success=True)


def test_push_teardown_delete_manifest_created_in_tests_before_blobs(oci):
    """Delete manifest created in tests

    Push / Teardown, OCI_DELETE_MANIFEST_BEFORE_BLOBS=true: manifests[1], then the no-layer manifest."""
    only_if_manifests_before_blobs(oci)
    _push_delete_manifests(oci)


def test_push_teardown_delete_config_blob_created_in_tests(oci):
    """Delete config blob created in tests"""
    _delete_blob_2xx_404_405(oci, oci.data.configs[1])


def test_push_teardown_delete_layer_blob_created_in_setup(oci):
    """Delete layer blob created in setup"""
    _delete_blob_2xx_404_405(oci, oci.data.layer)


def test_push_teardown_delete_manifest_created_in_tests_after_blobs(oci):
    """Delete manifest created in tests

    Push / Teardown, OCI_DELETE_MANIFEST_BEFORE_BLOBS=false."""
    only_if_blobs_before_manifests(oci)
    _push_delete_manifests(oci)


# =============================================================================================
# 03 Content Discovery
# =============================================================================================

# ---- Setup ----

def test_discovery_setup_populate_registry_with_test_blob(oci):
    """Populate registry with test blob

    Content Discovery / Setup (configs[2])."""
    resp = oci.post_then_put(oci.data.configs[2])
    expect_status(resp, success=True)


def test_discovery_setup_populate_registry_with_test_layer(oci):
    """Populate registry with test layer

    Content Discovery / Setup."""
    resp = oci.post_then_put(oci.data.layer)
    expect_status(resp, success=True)


def test_discovery_setup_populate_registry_with_test_tags(oci):
    """Populate registry with test tags

    Content Discovery / Setup: manifests[2] to test0..test3 (2xx each), then GET tags/list (unchecked)."""
    for i in range(oci.discovery_num_tags):
        tag = f"test{i}"
        oci.discovery_tag_list.append(tag)
        resp = oci.put_manifest(tag, oci.data.manifests[2].content)
        expect_status(resp, success=True)
    resp = oci.request("GET", "/v2/<name>/tags/list")
    oci.discovery_tag_list = go_tag_list(resp, strict=False)


def test_discovery_setup_populate_registry_with_test_tags_no_push(oci):
    """Populate registry with test tags (no push)

    Content Discovery / Setup: RunOnlyIfNot(runContentDiscoverySetup)."""
    pytest.skip("runs only when OCI_TAG_LIST is set")


def test_discovery_setup_references_setup(oci):
    """References setup

    Content Discovery / Setup: blobs, then the referrers (by digest) before and after their subject
    manifests[4] (tag tagtest0); every response 2xx and every OCI-Subject equal to the subject digest,
    manifests[3] for the dangling subject of the C artifact."""
    d = oci.data
    assert d.empty_json.digest == EMPTY_JSON_DIGEST

    def put_referrer(blob: Blob, subject: str, media_type: str = IMAGE_MANIFEST) -> None:
        resp = oci.put_manifest(blob.digest, blob.content, media_type)
        expect_status(resp, success=True)
        assert resp.headers.get("OCI-Subject", "") == subject, describe(resp, f"OCI-Subject: {subject}")

    expect_status(oci.post_then_put(d.empty_json), success=True)
    # reference blob before the image manifest is pushed
    expect_status(oci.post_then_put(d.ref_blob_a), success=True)
    put_referrer(d.refs_a_config, d.manifests[4].digest)
    put_referrer(d.refs_a_layer, d.manifests[4].digest)
    put_referrer(d.refs_index, d.manifests[4].digest, IMAGE_INDEX)
    expect_status(oci.post_then_put(d.configs[4]), success=True)
    expect_status(oci.post_then_put(d.layer), success=True)
    resp = oci.put_manifest(TEST_TAG, d.manifests[4].content)
    expect_status(resp, success=True)
    # reference blob after the image manifest is pushed
    expect_status(oci.post_then_put(d.ref_blob_b), success=True)
    put_referrer(d.refs_b_config, d.manifests[4].digest)
    put_referrer(d.refs_b_layer, d.manifests[4].digest)
    # a subject that does not exist
    put_referrer(d.refs_c_layer, d.manifests[3].digest)


# ---- Test content discovery endpoints (listing tags) ----

def test_discovery_get_request_to_list_tags_should_yield_200_response(oci):
    """GET request to list tags should yield 200 response"""
    resp = oci.request("GET", "/v2/<name>/tags/list")
    expect_status(resp, 200)
    oci.discovery_tag_list = go_tag_list(resp, strict=False)
    oci.discovery_num_tags = len(oci.discovery_tag_list)


def test_discovery_get_number_of_tags_should_be_limitable_by_n_query_parameter(oci):
    """GET number of tags should be limitable by `n` query parameter"""
    num_results = oci.discovery_num_tags // 2
    resp = oci.request("GET", "/v2/<name>/tags/list", params={"n": str(num_results)})
    expect_status(resp, 200)
    oci.discovery_tag_list = go_tag_list(resp, strict=False)
    assert len(oci.discovery_tag_list) == num_results, describe(resp, f"exactly {num_results} tags")


def test_discovery_get_start_of_tag_is_set_by_last_query_parameter(oci):
    """GET start of tag is set by `last` query parameter

    The suite's follow-up assertions re-check the first page, not the second; so do these."""
    num_results = oci.discovery_num_tags // 2
    resp = oci.request("GET", "/v2/<name>/tags/list", params={"n": str(num_results)})
    oci.discovery_tag_list = tag_list = go_tag_list(resp, strict=False)
    # Go indexes tagList[numResults-1]: out of range is a failure
    assert 0 <= num_results - 1 < len(tag_list), describe(resp, f"at least {num_results} tags (n={num_results})")
    last = tag_list[num_results - 1]
    resp = oci.request("GET", "/v2/<name>/tags/list", params={"n": str(num_results), "last": last})
    expect_status(resp, 200)
    assert len(tag_list) <= num_results
    assert last in tag_list


# ---- Test content discovery endpoints (listing references) ----

def test_discovery_get_request_to_nonexistent_blob_should_result_in_empty_200_response(oci):
    """GET request to nonexistent blob should result in empty 200 response

    Referrers of a digest nothing refers to: 200, Content-Type exactly the index type, no manifests."""
    resp = oci.request("GET", f"/v2/<name>/referrers/{DUMMY_DIGEST}")
    expect_status(resp, 200)
    assert resp.headers.get("Content-Type", "") == IMAGE_INDEX, describe(resp, f"Content-Type: {IMAGE_INDEX}")
    manifests = go_index_manifests(resp)
    assert len(manifests) == 0, describe(resp, "no manifests")


def test_discovery_get_request_to_existing_blob_should_yield_200(oci):
    """GET request to existing blob should yield 200

    Referrers of manifests[4]: exactly 5 (A config, A layer, index, B config, B layer), each with
    exactly one annotation, the one its manifest carries."""
    resp = oci.request("GET", f"/v2/<name>/referrers/{oci.data.manifests[4].digest}")
    expect_status(resp, 200)
    assert resp.headers.get("Content-Type", "") == IMAGE_INDEX, describe(resp, f"Content-Type: {IMAGE_INDEX}")
    manifests = go_index_manifests(resp)
    assert len(manifests) == 5, describe(resp, "5 referrers")
    assert manifests[0].get("digest") != manifests[1].get("digest"), describe(resp, "distinct referrers")
    check_annotations(resp, manifests, oci.data.annotation_values)


def test_discovery_get_request_to_existing_blob_with_filter_should_yield_200(oci):
    """GET request to existing blob with filter should yield 200

    ?artifactType=application/vnd.nhl.peanut.butter.bagel: with OCI-Filters-Applied, exactly the two
    A artifacts; without it all 5 (and the suite only warns)."""
    resp = oci.request("GET", f"/v2/<name>/referrers/{oci.data.manifests[4].digest}",
                       params={"artifactType": ARTIFACT_TYPE_A})
    expect_status(resp, 200)
    assert resp.headers.get("Content-Type", "") == IMAGE_INDEX, describe(resp, f"Content-Type: {IMAGE_INDEX}")
    manifests = go_index_manifests(resp)
    if resp.headers.get("OCI-Filters-Applied", ""):
        assert len(manifests) == 2, describe(resp, "2 referrers after the artifactType filter")
        assert resp.headers["OCI-Filters-Applied"] == ARTIFACT_TYPE_FILTER, \
            describe(resp, f"OCI-Filters-Applied: {ARTIFACT_TYPE_FILTER}")
        check_annotations(resp, manifests, oci.data.annotation_values)
    else:
        assert len(manifests) == 5, describe(resp, "5 referrers (no filter applied)")
        check_annotations(resp, manifests, oci.data.annotation_values)
        warnings.warn("filtering by artifact-type is not implemented")


def test_discovery_get_request_to_missing_manifest_should_yield_200(oci):
    """GET request to missing manifest should yield 200

    Referrers of manifests[3], never pushed: exactly the C artifact."""
    resp = oci.request("GET", f"/v2/<name>/referrers/{oci.data.manifests[3].digest}")
    expect_status(resp, 200)
    assert resp.headers.get("Content-Type", "") == IMAGE_INDEX, describe(resp, f"Content-Type: {IMAGE_INDEX}")
    manifests = go_index_manifests(resp)
    assert len(manifests) == 1, describe(resp, "1 referrer")
    assert manifests[0].get("digest") == oci.data.refs_c_layer.digest, \
        describe(resp, f"the referrer {oci.data.refs_c_layer.digest}")


# ---- Teardown ----

def _discovery_delete_manifests_and_tags(oci: SuiteRun) -> None:
    d = oci.data
    references = [d.refs_index.digest, d.manifests[2].digest, d.manifests[4].digest, d.refs_a_config.digest,
                  d.refs_a_layer.digest, TEST_TAG, d.refs_b_config.digest, d.refs_b_layer.digest,
                  d.refs_c_layer.digest]
    for ref in references:
        resp = oci.request("DELETE", f"/v2/<name>/manifests/{ref}")
        expect_status(resp, 405, 404, success=True)


def test_discovery_teardown_delete_created_manifest_and_associated_tags_before_blobs(oci):
    """Delete created manifest & associated tags

    Content Discovery / Teardown, OCI_DELETE_MANIFEST_BEFORE_BLOBS=true: 2xx, 405 or 404 each."""
    only_if_manifests_before_blobs(oci)
    _discovery_delete_manifests_and_tags(oci)


def test_discovery_teardown_delete_config_blob_created_in_tests(oci):
    """Delete config blob created in tests

    Content Discovery / Teardown: configs[2]; 2xx or 405 only (404 fails)."""
    resp = oci.request("DELETE", f"/v2/<name>/blobs/{oci.data.configs[2].digest}")
    expect_status(resp, 405, success=True)


def test_discovery_teardown_delete_layer_blob_created_in_setup(oci):
    """Delete layer blob created in setup

    Content Discovery / Teardown: 2xx or 405 only (404 fails)."""
    resp = oci.request("DELETE", f"/v2/<name>/blobs/{oci.data.layer.digest}")
    expect_status(resp, 405, success=True)


def test_discovery_teardown_delete_created_manifest_and_associated_tags_after_blobs(oci):
    """Delete created manifest & associated tags

    Content Discovery / Teardown, OCI_DELETE_MANIFEST_BEFORE_BLOBS=false: 2xx, 405 or 404 each."""
    only_if_blobs_before_manifests(oci)
    _discovery_delete_manifests_and_tags(oci)


def test_discovery_teardown_references_teardown(oci):
    """References teardown

    Content Discovery / Teardown: the referrer manifests (before or after the blobs, by the order
    setting) and the blobs configs[4], testRefBlobA, testRefBlobB, {}; 2xx, 405 or 404 each."""
    d = oci.data

    def delete(kind: str, ref: str) -> None:
        resp = oci.request("DELETE", f"/v2/<name>/{kind}/{ref}")
        expect_status(resp, 405, 404, success=True)

    def delete_manifests() -> None:
        for blob in (d.refs_index, d.refs_a_config, d.refs_a_layer, d.manifests[4], d.refs_b_config,
                     d.refs_b_layer):
            delete("manifests", blob.digest)

    if oci.delete_manifest_before_blobs:
        delete_manifests()
    for blob in (d.configs[4], d.ref_blob_a, d.ref_blob_b, d.empty_json):
        delete("blobs", blob.digest)
    if not oci.delete_manifest_before_blobs:
        delete_manifests()


# =============================================================================================
# 04 Content Management
# =============================================================================================

# ---- Setup ----

def test_management_setup_populate_registry_with_test_config_blob(oci):
    """Populate registry with test config blob

    Content Management / Setup (configs[3])."""
    resp = oci.post_then_put(oci.data.configs[3])
    expect_status(resp, success=True)


def test_management_setup_populate_registry_with_test_layer(oci):
    """Populate registry with test layer

    Content Management / Setup."""
    resp = oci.post_then_put(oci.data.layer)
    expect_status(resp, success=True)


def test_management_setup_populate_registry_with_test_tag(oci):
    """Populate registry with test tag

    Content Management / Setup: manifests[3] to tagtest0."""
    oci.tag_to_delete = TEST_TAG
    resp = oci.put_manifest(oci.tag_to_delete, oci.data.manifests[3].content)
    expect_status(resp, success=True)


def test_management_setup_check_how_many_tags_there_are_before_anything_gets_deleted(oci):
    """Check how many tags there are before anything gets deleted"""
    resp = oci.request("GET", "/v2/<name>/tags/list")
    expect_status(resp, 200)
    oci.management_num_tags = len(go_tag_list(resp, strict=True))


# ---- Manifest delete ----

def test_management_delete_request_to_manifest_tag_should_return_202_unless_tag_deletion_is_disallowed(oci):
    """DELETE request to manifest tag should return 202, unless tag deletion is disallowed (400/405)"""
    resp = oci.request("DELETE", f"/v2/<name>/manifests/{oci.tag_to_delete}")
    expect_status(resp, 400, 202, 405)
    if resp.status_code == 400:
        errors = go_errors(resp)
        assert errors[0].get("code", "") == "UNSUPPORTED", describe(resp, "error code UNSUPPORTED")


def test_management_delete_request_to_manifest_digest_should_yield_202_response_unless_already_deleted(oci):
    """DELETE request to manifest (digest) should yield 202 response unless already deleted"""
    resp = oci.request("DELETE", f"/v2/<name>/manifests/{oci.data.manifests[3].digest}")
    expect_status(resp, 202, 404)


def test_management_get_request_to_deleted_manifest_url_should_yield_404_response_unless_delete_is_disallowed(oci):
    """GET request to deleted manifest URL should yield 404 response, unless delete is disallowed"""
    resp = oci.request("GET", f"/v2/<name>/manifests/{oci.data.manifests[3].digest}")
    expect_status(resp, 404, 200)


def test_management_get_request_to_tags_list_should_reflect_manifest_deletion(oci):
    """GET request to tags list should reflect manifest deletion"""
    resp = oci.request("GET", "/v2/<name>/tags/list")
    expect_status(resp, 200)
    tags = go_tag_list(resp, strict=True)
    assert len(tags) < oci.management_num_tags, describe(resp, f"fewer than {oci.management_num_tags} tags")


# ---- Blob delete ----

def test_management_delete_request_to_blob_url_should_yield_202_response(oci):
    """DELETE request to blob URL should yield 202 response

    configs[3], then the layer: 202, 404 or 405 each; 405 on the layer means blob delete is disallowed."""
    resp = oci.request("DELETE", f"/v2/<name>/blobs/{oci.data.configs[3].digest}")
    expect_status(resp, 202, 404, 405)
    resp = oci.request("DELETE", f"/v2/<name>/blobs/{oci.data.layer.digest}")
    expect_status(resp, 202, 404, 405)
    if resp.status_code == 405:
        oci.blob_delete_allowed = False


def test_management_get_request_to_deleted_blob_url_should_yield_404_response(oci):
    """GET request to deleted blob URL should yield 404 response"""
    if not oci.blob_delete_allowed:
        pytest.skip("runs only if blob delete is allowed")
    resp = oci.request("GET", f"/v2/<name>/blobs/{oci.data.configs[3].digest}")
    expect_status(resp, 404)
