"""``dockyard gc --grace``: collect sooner than gc_delay on a full disk, without breaking a push
in flight (issue 13). In process on SQLite and PostgreSQL, a fake clock, a fault point holding
the push."""

import hashlib
import re
import threading
import time

import pytest

from dockyard import faults
from dockyard.config import ConfigError
from dockyard.lifecycle import deletes, trash
from dockyard.lifecycle.collector import MIN_GRACE, Collector, GcOptions
from dockyard.registry import blobs, manifests, uploads
from tests.lifecycle_support import make_registry, put_blob, put_image, stored_blobs
from tests.support import OCI_MANIFEST, image_manifest, make_config, make_layer, sha256

GC_DELAY = 3600


@pytest.fixture(params=["sqlite", "postgres"])
def reg(tmp_path, request):
    with make_registry(tmp_path, request.param, gc_delay=GC_DELAY, upload_ttl=86400) as r:
        yield r


def _read(reg, name, data):
    blob = blobs.stat(reg, name, sha256(data))
    return hashlib.sha256(b"".join(blobs.read(reg, blob))).hexdigest() == sha256(data)[7:]


def test_grace_collects_sooner_and_a_push_in_flight_keeps_its_blobs(reg):
    shared = make_layer("shared-layer")
    old, old_blobs = put_image(reg, "team/old", "v1", "old", shared=[shared])
    deletes.delete_manifest(reg, "team/old", old)
    trash.purge(reg, f"team/old@{old}")  # its links wait for gc_delay
    reg.clock.advance(20 * 60)
    assert Collector.for_registry(reg).run().total_objects == 0  # gc_delay (1h) not over: nothing goes

    # a push in flight: its config committed a minute ago, its manifest not yet pushed ...
    config = make_config("new")
    put_blob(reg, "team/new", config)
    reg.clock.advance(60)
    # ... and the shared layer being uploaded right now, held after its bytes were verified
    result = {}

    def push_shared():
        up = uploads.start(reg, "team/new")
        up = uploads.write(reg, up, [shared])
        result["blob"] = uploads.finish(reg, "team/new", up, sha256(shared))

    with faults.hold("uploads.verified") as held:
        pusher = threading.Thread(target=push_shared)
        pusher.start()
        assert held.reached.wait(30)
        report = Collector.for_registry(reg, grace=600).run()
        held.release()
        pusher.join(30)
    assert "blob" in result
    # the old image's layers went (20 minutes > 10 minutes of grace), the shared one included:
    # the push held before its commit had not linked it yet
    collected = report.as_dict()
    assert collected["kinds"]["links"]["objects"] >= 3 and collected["kinds"]["blobs"]["objects"] >= 3
    assert sha256(old_blobs[0]) not in stored_blobs(reg)
    # the push goes on: the shared layer was committed again, its config (linked a minute ago) stayed
    body = image_manifest(config, [shared])
    manifests.put(reg, "team/new", "v1", body, OCI_MANIFEST)
    assert _read(reg, "team/new", config) and _read(reg, "team/new", shared)
    assert {sha256(config), sha256(shared)} <= stored_blobs(reg)
    # and a later collection with the same grace keeps all of it (referenced now)
    reg.clock.advance(3 * 3600)
    Collector.for_registry(reg, grace=600).run()
    assert _read(reg, "team/new", config) and _read(reg, "team/new", shared)


def test_grace_keeps_what_a_pusher_just_checked(reg):
    """A client that HEADs a layer (exists: it skips the upload) keeps it for the grace."""
    layer = make_layer("checked")
    d, _ = put_image(reg, "team/a", "v1", "a", shared=[layer])
    deletes.delete_manifest(reg, "team/a", d)
    trash.purge(reg, f"team/a@{d}")
    reg.clock.advance(50 * 60)
    blobs.stat(reg, "team/a", sha256(layer))  # a pusher's HEAD: exists
    reg.clock.advance(5 * 60)
    Collector.for_registry(reg, grace=600).run()
    assert sha256(layer) in stored_blobs(reg)  # checked 5 minutes ago: within the grace
    reg.clock.advance(6 * 60)
    Collector.for_registry(reg, grace=600).run()
    assert sha256(layer) not in stored_blobs(reg)  # 11 minutes: past the grace, nothing needs it


@pytest.mark.parametrize("grace,message", [(60, "below 5 minutes"), (MIN_GRACE - 1, "below 5 minutes"),
                                           (GC_DELAY + 1, "longer than gc_delay")])
def test_a_grace_below_the_floor_or_above_gc_delay_is_refused(grace, message):
    with pytest.raises(ConfigError, match=message):
        GcOptions(gc_delay=GC_DELAY, grace=grace)
    assert GcOptions(gc_delay=GC_DELAY, grace=MIN_GRACE).horizon == GC_DELAY - MIN_GRACE


def test_gc_cli_grace(tmp_path, capsys):
    from dockyard.cli import main

    with make_registry(tmp_path, "sqlite", gc_delay=GC_DELAY) as reg:
        reg.clock.t = time.time() - 30 * 60
        d, _ = put_image(reg, "app", "v1", "cli-grace")
        deletes.delete_manifest(reg, "app", d)
        trash.purge(reg, f"app@{d}")
    assert main(["gc", "--grace", "3", "--data-dir", str(tmp_path)]) == 2
    assert "needs a unit" in capsys.readouterr().err
    assert main(["gc", "--grace", "1m", "--data-dir", str(tmp_path)]) == 2
    assert "below 5 minutes" in capsys.readouterr().err
    assert main(["gc", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"links still in their grace period \(gc_delay 1h\): the first is due in (29|30)m", out)
    assert main(["gc", "--grace", "10m", "--dry-run", "--output", "json", "--data-dir", str(tmp_path)]) == 0
    assert '"links"' in capsys.readouterr().out
    assert main(["gc", "--grace", "10m", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "links" in out and "still in their grace period" not in out
    with make_registry(tmp_path, "sqlite", gc_delay=GC_DELAY) as reg:
        assert stored_blobs(reg) == set()

