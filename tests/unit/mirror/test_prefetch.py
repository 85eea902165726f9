"""The mirror's prefetch and the join of a fetch in flight, in process, against a loopback
upstream (tests/mirror_support.py): a request for a blob whose fetch is in flight waits for
it and is served what it stored (one upstream request); the prefetch stores the blobs of a
fetched image manifest with no client asking; a prefetched blob from a lying upstream is not
stored, is logged once, and a client that joined it gets the upstream's error, never its bytes."""

from __future__ import annotations

import logging
import random
import threading
import time

import pytest

from dockyard import faults
from dockyard.errors import RegistryError
from dockyard.mirror.service import Mirror
from dockyard.registry import blobs, manifests
from tests.lifecycle_support import make_registry
from tests.mirror_support import Hostile
from tests.support import OCI_MANIFEST, image_manifest, make_config, sha256
from tests.unit.mirror.test_stream_through import Collected


@pytest.fixture
def upstream():
    h = Hostile()
    yield h
    h.stop()


def _mirror(tmp_path, upstream, **settings):
    return make_registry(tmp_path, "sqlite", mirrors={"hub": {"prefix": "hub/", "url": upstream.url}}, **settings)


def _stored(m: Mirror, digest: str) -> bytes | None:
    try:
        return b"".join(blobs.read(m.reg, blobs.stat(m.reg, "hub/app", digest)))
    except RegistryError as exc:
        assert exc.code in ("BLOB_UNKNOWN", "NAME_UNKNOWN")
        return None


def _image_stored(m: Mirror, ref: str) -> bool:
    try:
        manifests.get(m.reg, "hub/app", ref, None)
        return True
    except RegistryError:
        return False


def _completions_done(m: Mirror, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with m._lock:
            if not m._completing and not m._fetching:
                return
        time.sleep(0.02)
    raise AssertionError("the background completion did not end")


def _gets(upstream: Hostile, digest: str) -> int:
    return upstream.hits.count(f"GET /v2/app/blobs/{digest}")


def test_a_request_for_a_blob_in_flight_joins_it(tmp_path, upstream):
    data = random.Random("join").randbytes(2 * 1024 * 1024 + 5)
    d = sha256(data)
    upstream.blob("app", d, data)
    with _mirror(tmp_path, upstream, mirror_prefetch_blobs=False) as reg:
        m = Mirror(reg)
        try:
            with faults.hold("mirror.blob_claimed") as held:
                fetch = threading.Thread(target=m.fetch_blob, args=("hub/app", d))
                fetch.start()
                assert held.reached.wait(10)  # the fetch has claimed the digest, asked nothing yet
                client, opened = Collected(), []
                second = threading.Thread(target=lambda: opened.append(m.open_blob("hub/app", d, client)))
                second.start()
                second.join(0.5)
                assert second.is_alive(), "the second request did not wait for the fetch in flight"
                assert _gets(upstream, d) == 0
                held.release()
                fetch.join(20)
                second.join(20)
            assert opened == [None]  # joined: served from the store by the caller
            assert client.chunks == [] and client.error is None
            assert _stored(m, d) == data
            assert _gets(upstream, d) == 1  # one upstream request for both
        finally:
            m.close()


def test_a_request_in_another_worker_joins_a_fetch_in_flight(tmp_path, upstream):
    """Two mirrors on one data directory are two workers of one ``serve``: the second waits
    for the first one's fetch (a host claim, ``mirror.claims``) and asks the upstream nothing."""
    data = random.Random("join-worker").randbytes(1024 * 1024 + 7)
    d = sha256(data)
    upstream.blob("app", d, data)
    with _mirror(tmp_path, upstream, mirror_prefetch_blobs=False) as reg:
        first, second = Mirror(reg), Mirror(reg)
        try:
            with faults.hold("mirror.blob_claimed") as held:
                fetch = threading.Thread(target=first.fetch_blob, args=("hub/app", d))
                fetch.start()
                assert held.reached.wait(10)
                client, opened = Collected(), []
                joining = threading.Thread(target=lambda: opened.append(second.open_blob("hub/app", d, client)))
                joining.start()
                joining.join(0.5)
                assert joining.is_alive(), "the other worker did not wait for the fetch in flight"
                held.release()
                fetch.join(20)
                joining.join(20)
            assert opened == [None] and client.chunks == []
            assert _stored(second, d) == data
            assert _gets(upstream, d) == 1
            assert list((tmp_path / "mirror-fetching").iterdir()) == []  # no claim left behind
        finally:
            first.close()
            second.close()


def test_the_prefetch_stores_the_blobs_of_a_fetched_manifest(tmp_path, upstream):
    config = make_config("prefetch")
    layers = [random.Random(f"prefetch-{i}").randbytes(300_000) for i in range(3)]
    manifest = image_manifest(config, layers)
    upstream.image("app", "v1", manifest, [config, *layers], OCI_MANIFEST)
    with _mirror(tmp_path, upstream, mirror_prefetch_blobs=True, mirror_prefetch_workers=2) as reg:
        m = Mirror(reg)
        try:
            got, _ = m.manifest("hub/app", "v1", [OCI_MANIFEST])  # no client asks for any blob
            assert got.payload == manifest
            _completions_done(m)
            for b in (config, *layers):
                assert _stored(m, sha256(b)) == b
                assert _gets(upstream, sha256(b)) == 1
            assert _image_stored(m, "v1")
        finally:
            m.close()


def test_a_prefetched_blob_from_a_lying_upstream_is_not_stored(tmp_path, upstream, caplog, monkeypatch):
    # the records name their thread (logsetup.setup(), run by earlier tests in this process, turns that off)
    monkeypatch.setattr(logging, "logThreads", True)
    config, good = make_config("liar"), random.Random("liar").randbytes(400_000)
    manifest = image_manifest(config, [good])
    upstream.image("app", "v1", manifest, [config, good], OCI_MANIFEST)
    upstream.blob("app", sha256(good), good[:-10] + b"x" * 10)  # the layer's bytes lie
    caplog.set_level(logging.INFO, logger="dockyard.mirror")
    with _mirror(tmp_path, upstream, mirror_prefetch_blobs=True, mirror_prefetch_workers=1) as reg:
        m = Mirror(reg)
        try:
            m.fetch_blob("hub/app", sha256(config))  # here already: the prefetch claims the layer only
            with faults.hold("mirror.blob_claimed") as held:
                m.manifest("hub/app", "v1", [OCI_MANIFEST])
                assert held.reached.wait(10)  # the prefetch holds the layer's claim
                client, opened = Collected(), []
                joined = threading.Thread(
                    target=lambda: opened.append(m.open_blob("hub/app", sha256(good), client)))
                joined.start()  # joins the prefetch of the layer, which then fails
                joined.join(0.5)
                assert joined.is_alive(), "the request did not join the prefetch in flight"
                assert _gets(upstream, sha256(good)) == 0
                held.release()
                joined.join(20)
            assert opened and opened[0] is not None  # the prefetch failed: the request fetched itself
            assert client.done.wait(20)
            assert client.error is not None and len(b"".join(client.chunks)) < len(good)
            _completions_done(m)
            assert _stored(m, sha256(good)) is None and not _image_stored(m, "v1")
            assert _gets(upstream, sha256(good)) == 2  # the prefetch's and the client's own, no retry
            lines = [r for r in caplog.records if r.levelno >= logging.WARNING and "hub" in r.getMessage()]
            prefetch_lines = [r for r in lines if r.threadName.startswith(("mirror-prefetch", "mirror-hub"))]
            assert len(prefetch_lines) == 1, [r.getMessage() for r in lines]
        finally:
            m.close()


@pytest.mark.parametrize("lie", [None, "wrong-bytes"])
def test_a_request_follows_a_prefetch_as_it_reads(tmp_path, upstream, lie):
    """A request for a blob the prefetch is reading replays what was read and follows the
    rest (one upstream request); the last chunk only once the digest verifies, so from a lying
    upstream the request gets an error and never the whole body, and nothing is stored."""
    config, layer = make_config(f"tee-{lie}"), random.Random(f"tee-{lie}").randbytes(3 * 1024 * 1024 + 11)
    manifest = image_manifest(config, [layer])
    upstream.image("app", "v1", manifest, [config, layer], OCI_MANIFEST)
    if lie:
        upstream.blob("app", sha256(layer), layer[:-10] + b"x" * 10)
    with _mirror(tmp_path, upstream, mirror_prefetch_blobs=True, mirror_prefetch_workers=1) as reg:
        m = Mirror(reg)
        try:
            m.fetch_blob("hub/app", sha256(config))  # here already: the prefetch reads the layer only
            with faults.hold("mirror.teed_chunk") as held:
                m.manifest("hub/app", "v1", [OCI_MANIFEST])
                assert held.reached.wait(10)  # the prefetch has read (and teed) its first chunk
                client = Collected()
                opened = m.open_blob("hub/app", sha256(layer), client)
                assert opened is not None and opened.size == len(layer)  # joined, not waiting
                deadline = time.monotonic() + 10
                while not client.chunks and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert client.chunks and not client.done.is_set()  # the replay, not the whole
                held.release()
                assert client.done.wait(20)
            _completions_done(m)
            assert _gets(upstream, sha256(layer)) == 1
            if lie:
                assert client.error is not None and len(b"".join(client.chunks)) < len(layer)
                assert _stored(m, sha256(layer)) is None and not _image_stored(m, "v1")
            else:
                assert client.error is None and b"".join(client.chunks) == layer
                assert _stored(m, sha256(layer)) == layer and _image_stored(m, "v1")
        finally:
            m.close()


def test_a_request_waiting_for_a_hung_fetch_gets_a_503_not_a_wait_forever(tmp_path, upstream, monkeypatch):
    """A fetch in another worker that hangs holding its claim: the waiting request gives up
    after its wait (a 503 UNAVAILABLE with Retry-After), it does not wait again and again."""
    from dockyard.mirror import service

    monkeypatch.setattr(service, "FETCH_WAIT", 0.3)
    monkeypatch.setattr(service, "JOIN_WAIT", 0.5)
    data = random.Random("hung").randbytes(4096)
    d = sha256(data)
    upstream.blob("app", d, data)
    with _mirror(tmp_path, upstream, mirror_prefetch_blobs=False) as reg:
        first, second = Mirror(reg), Mirror(reg)
        try:
            with faults.hold("mirror.blob_claimed") as held:
                fetch = threading.Thread(target=first.fetch_blob, args=("hub/app", d))
                fetch.start()
                assert held.reached.wait(10)  # hung, holding the host claim
                outcome = []

                def waiting():
                    try:
                        outcome.append(second.open_blob("hub/app", d, Collected()))
                    except RegistryError as exc:
                        outcome.append(exc)

                t = threading.Thread(target=waiting, daemon=True)
                t.start()
                t.join(5)
                assert not t.is_alive(), "the request still waits for a fetch that hangs"
                held.release()
                fetch.join(20)
            assert len(outcome) == 1 and isinstance(outcome[0], RegistryError)
            assert outcome[0].code == "UNAVAILABLE" and outcome[0].retry_after > 0
            assert _gets(upstream, d) == 1  # the waiting request asked the upstream nothing
        finally:
            first.close()
            second.close()
