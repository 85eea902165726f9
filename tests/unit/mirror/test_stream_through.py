"""``mirror.stream.through`` in process, against a loopback upstream (tests/mirror_support.py):
the client gets the whole blob only when it verifies; the store commits it with the
reader's hash; a lying upstream gets nothing stored and the client an error; while the
registry refuses uploads (a real disk reserve that cannot be made) the blob is relayed and
nothing is stored."""

from __future__ import annotations

import random
import threading
import time

import pytest

from dockyard.errors import RegistryError
from dockyard.lifecycle.reserve import DiskReserve
from dockyard.mirror.service import Mirror
from dockyard.registry import blobs
from tests.lifecycle_support import make_registry
from tests.mirror_support import Hostile
from tests.support import sha256


class Collected:
    """The client's side of a stream (what ``api.streaming.ThreadFeed`` is to a response)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.error: BaseException | None = None
        self.done = threading.Event()

    def put(self, chunk: bytes) -> bool:
        self.chunks.append(chunk)
        return True

    def end(self) -> None:
        self.done.set()

    def fail(self, exc: BaseException) -> None:
        self.error = exc
        self.done.set()


@pytest.fixture
def upstream():
    h = Hostile()
    yield h
    h.stop()


@pytest.fixture
def mirror(tmp_path, upstream):
    with make_registry(tmp_path, "sqlite", mirrors={"hub": {"prefix": "hub/", "url": upstream.url}}) as reg:
        m = Mirror(reg)
        yield m
        m.close()


def _through(mirror: Mirror, digest: str) -> Collected:
    client = Collected()
    assert mirror.open_blob("hub/app", digest, client) is not None
    assert client.done.wait(30)
    with mirror._lock:  # the store has ended once the fetch claim is released
        ev = mirror._fetching.get(digest)
    if ev is not None:
        assert ev.wait(30)
    return client


def _stored(mirror: Mirror, digest: str) -> bytes | None:
    try:
        return b"".join(blobs.read(mirror.reg, blobs.stat(mirror.reg, "hub/app", digest)))
    except RegistryError as exc:
        assert exc.code in ("BLOB_UNKNOWN", "NAME_UNKNOWN")
        return None


def test_a_blob_streams_to_the_client_and_is_stored_once_verified(mirror, upstream):
    data = random.Random("good").randbytes(3 * 1024 * 1024 + 17)
    upstream.blob("app", sha256(data), data)
    client = _through(mirror, sha256(data))
    assert client.error is None and b"".join(client.chunks) == data
    assert _stored(mirror, sha256(data)) == data


@pytest.mark.parametrize("lie", ["wrong-bytes", "truncated"])
def test_a_lying_upstream_gets_nothing_stored_and_the_client_an_error(mirror, upstream, lie):
    data = random.Random(lie).randbytes(2 * 1024 * 1024)
    if lie == "wrong-bytes":
        upstream.blob("app", sha256(data), data[:-10] + b"x" * 10)
    else:
        upstream.blob("app", sha256(data), data, cut=1024 * 1024 + 5)
    client = _through(mirror, sha256(data))
    assert client.error is not None
    assert len(b"".join(client.chunks)) < len(data)  # never the whole body
    assert _stored(mirror, sha256(data)) is None


def test_relayed_not_stored_while_uploads_are_refused(mirror, upstream, tmp_path):
    mirror.reg.reserve = DiskReserve(tmp_path / "reserve", 2 ** 60)  # no disk has room for it
    assert mirror.reg.reserve.refuses_uploads()
    data = random.Random("relay").randbytes(1024 * 1024 + 3)
    upstream.blob("app", sha256(data), data)
    client = _through(mirror, sha256(data))
    assert client.error is None and b"".join(client.chunks) == data
    assert _stored(mirror, sha256(data)) is None
    bad = random.Random("relay-bad").randbytes(300_000)
    upstream.blob("app", sha256(bad), bad[:-1] + b"!")
    client = _through(mirror, sha256(bad))
    assert client.error is not None and len(b"".join(client.chunks)) < len(bad)


def test_a_cold_pull_asks_the_upstream_once_per_manifest_and_blob(mirror, upstream):
    """No HEAD before a GET, no second fetch of the manifest or of a blob the client pulled
    (the background completion finds everything stored; a client request for a blob the
    prefetch is fetching joins it and is served what it stored)."""
    from tests.support import OCI_MANIFEST, image_manifest, make_config

    config, layers = make_config("once"), [random.Random(f"once-{i}").randbytes(200_000) for i in range(2)]
    manifest = image_manifest(config, layers)
    upstream.image("app", "v1", manifest, [config, *layers], OCI_MANIFEST)
    got, stale = mirror.manifest("hub/app", "v1", [OCI_MANIFEST])
    assert got.payload == manifest and not stale
    for b in (config, *layers):
        client = Collected()
        if mirror.open_blob("hub/app", sha256(b), client) is None:  # joined the prefetch: stored
            assert _stored(mirror, sha256(b)) == b
        else:
            assert client.done.wait(30) and b"".join(client.chunks) == b
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "hub/app" not in _stored_images(mirror):
        time.sleep(0.05)
    assert "hub/app" in _stored_images(mirror)  # the completion stored the manifest
    assert sorted(upstream.hits) == sorted(["GET /v2/app/manifests/v1"]
                                           + [f"GET /v2/app/blobs/{sha256(b)}" for b in (config, *layers)])


def _stored_images(mirror: Mirror) -> set[str]:
    from dockyard.registry import manifests

    try:
        manifests.get(mirror.reg, "hub/app", "v1", None)
        return {"hub/app"}
    except RegistryError:
        return set()
