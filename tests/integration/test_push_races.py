"""A push answered 2xx pulls completely afterwards, whatever runs beside it: deterministic
interleavings, on SQLite and PostgreSQL.

Each test holds one side inside its critical section at a fault-injection point (see
``dockyard.faults``), runs the other side while it is held, then lets it go. The invariant
checked afterwards is the promise itself: either the push got a clean 4xx, or everything it
acknowledged pulls. On SQLite the write transactions are serialised, so the second side
waits for the first; on PostgreSQL the row locks must give the same outcome.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from dockyard import faults
from dockyard.lifecycle import deletes, trash
from dockyard.errors import RegistryError
from dockyard.lifecycle.collector import Collector
from dockyard.registry import blobs, discovery, manifests
from tests.lifecycle_support import put_blob, put_image
from tests.support import OCI_INDEX, OCI_MANIFEST, image_manifest, make_config, make_layer, sha256

DELAY = 60


# read by the shared ``reg`` fixture (tests/conftest.py)
BACKENDS = ["sqlite", "postgres"]
REG_SETTINGS = {"delete_untagged": True}


class Side(threading.Thread):
    """Runs ``fn`` in a thread and keeps its result or its RegistryError."""

    def __init__(self, fn, *args):
        super().__init__(daemon=True)
        self.fn, self.args = fn, args
        self.result = self.error = None

    def run(self):
        try:
            self.result = self.fn(*self.args)
        except RegistryError as exc:
            self.error = exc


def interleave(point: str, first, second, *, settle: float = 0.5):
    """Run ``first`` until it reaches ``point``; run ``second`` meanwhile (give it ``settle``
    seconds to get as far as it can: to its lock wait), then let ``first`` go."""
    with faults.hold(point) as h:
        a = Side(*first)
        a.start()
        assert h.reached.wait(30), f"{point} was never reached"
        b = Side(*second)
        b.start()
        b.join(settle)
        h.release()
        a.join(30)
        b.join(30)
    assert not a.is_alive() and not b.is_alive()
    return a, b


def in_trash(reg, digest: str) -> bool:
    listing = trash.listing(reg)
    return any(e["digest"] == digest for e in listing["images"] + listing["tags"])


def pulls(reg, name: str, reference: str) -> None:
    """The image ``reference`` names pulls completely: manifest and every blob, byte-exact."""
    m = manifests.get(reg, name, reference)
    body = json.loads(m.payload)
    for d in [body["config"]["digest"], *(layer["digest"] for layer in body["layers"])]:
        data = b"".join(blobs.read(reg, blobs.stat(reg, name, d)))
        assert sha256(data) == d


def test_manifest_put_while_the_collector_removes_its_layer_links(reg):
    config, layer = make_config("race"), make_layer("race")
    for b in (config, layer):
        put_blob(reg, "app", b)
    reg.clock.advance(DELAY + 1)  # the links' reviews are due: no manifest references them
    body = image_manifest(config, [layer])
    gc = Collector.for_registry(reg)
    a, b = interleave("collector.links_locked", (gc.run,),
                      (manifests.put, reg, "app", "v1", body, OCI_MANIFEST))
    if b.error is None:  # acknowledged: it must pull
        pulls(reg, "app", "v1")
    else:
        assert b.error.code == "MANIFEST_BLOB_UNKNOWN"


def test_index_put_while_the_collector_purges_a_child(reg):
    child, _ = put_image(reg, "app", None, "child")  # untagged: reviewed with delete_untagged
    reg.clock.advance(DELAY + 1)
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                        "manifests": [{"mediaType": OCI_MANIFEST, "digest": child, "size": 1}]}).encode()
    gc = Collector.for_registry(reg)
    a, b = interleave("collector.manifests_checked", (gc.run,),
                      (manifests.put, reg, "app", "multi", index, OCI_INDEX))
    if b.error is None:
        assert manifests.get(reg, "app", child).digest == child
        pulls(reg, "app", child)
    else:
        assert b.error.code == "MANIFEST_BLOB_UNKNOWN"


def test_manifest_put_while_the_repository_is_deleted(reg):
    put_image(reg, "team/app", "old", "old")
    config, layer = make_config("new"), make_layer("new")
    for b in (config, layer):
        put_blob(reg, "team/app", b)
    body = image_manifest(config, [layer])
    a, b = interleave("repositories.delete_locked", (deletes.delete_repository, reg, "team/app"),
                      (manifests.put, reg, "team/app", "new", body, OCI_MANIFEST))
    assert a.error is None
    if b.error is None:  # the push came after the delete: the name lives again, with the push
        assert "team/app" in discovery.catalog(reg, None, None)
        assert manifests.get(reg, "team/app", "new").digest == sha256(body)
        with pytest.raises(RegistryError):
            manifests.get(reg, "team/app", "old")


def test_manifest_delete_while_the_same_bytes_are_pushed_again(reg):
    digest, _ = put_image(reg, "app", "v1", "same")
    body = manifests.get(reg, "app", digest).payload
    a, b = interleave("manifests.delete_locked", (deletes.delete_manifest, reg, "app", digest),
                      (manifests.put, reg, "app", "v2", body, OCI_MANIFEST))
    assert a.error is None and b.error is None
    # the push waited for the delete: it is live again, with its new tag, and out of the trash
    assert manifests.get(reg, "app", "v2").digest == digest
    pulls(reg, "app", "v2")
    assert "v2" in discovery.tags(reg, "app", None, None)
    assert not in_trash(reg, digest)
    # and nothing the scrubber does later takes it away
    reg.clock.advance(reg.config.scrub_time + DELAY + 1)
    from dockyard.lifecycle.scrubber import Scrubber
    Scrubber.for_registry(reg).run()
    pulls(reg, "app", "v2")


def test_deleting_a_child_of_a_live_index_is_refused(reg):
    child, _ = put_image(reg, "app", None, "kid")
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                        "manifests": [{"mediaType": OCI_MANIFEST, "digest": child, "size": 1}]}).encode()
    manifests.put(reg, "app", "multi", index, OCI_INDEX)
    with pytest.raises(RegistryError) as err:
        deletes.delete_manifest(reg, "app", child)
    assert err.value.code == "DENIED" and sha256(index) in err.value.detail["indexes"]
    deletes.delete_manifest(reg, "app", sha256(index))  # the index first: then the child may go
    deletes.delete_manifest(reg, "app", child)


def test_repush_after_delete_leaves_no_trash_entry_and_is_collected_when_untagged(reg):
    digest, _ = put_image(reg, "app", "v1", "again")
    body = manifests.get(reg, "app", digest).payload
    deletes.delete_manifest(reg, "app", digest)
    manifests.put(reg, "app", "v1", body, OCI_MANIFEST)
    assert not in_trash(reg, digest)
    put_image(reg, "app", "v1", "other")  # the tag moves away: the image is untagged
    reg.clock.advance(reg.config.scrub_time + DELAY + 1)
    Collector.for_registry(reg).run()
    with pytest.raises(RegistryError):
        manifests.get(reg, "app", digest)


def test_held_side_really_waits(reg):
    """The fixture of the tests above: a held collector stops a push on either database."""
    config = make_config("wait")
    put_blob(reg, "app", config)
    reg.clock.advance(DELAY + 1)
    body = image_manifest(config, [])
    with faults.hold("collector.links_locked") as h:
        a = Side(Collector.for_registry(reg).run)
        a.start()
        assert h.reached.wait(30)
        b = Side(manifests.put, reg, "app", "v1", body, OCI_MANIFEST)
        b.start()
        time.sleep(0.5)
        assert b.is_alive()  # waiting for the collector's lock
        h.release()
        a.join(30)
        b.join(30)
