"""Delayed delete, the trash, restore and the scrubber, in process on both databases."""

import hashlib
import threading
import tracemalloc

import pytest

from dockyard.lifecycle import deletes, trash
from dockyard.errors import RegistryError
from dockyard.lifecycle.runner import Runner
from dockyard.lifecycle.scrubber import Scrubber
from dockyard.registry import blobs, discovery, manifests
from tests.lifecycle_support import make_registry, put_image, put_index, stored_blobs
from tests.support import sha256

DAY = 86400


# read by the shared ``reg`` fixture (tests/conftest.py)
REG_SETTINGS = {"scrub_time": 7 * DAY}


def pull_all(reg, name, digest, content):
    """Download every blob of the image and verify its digest."""
    m = manifests.get(reg, name, digest)
    assert m.digest == digest
    for data in content:
        blob = blobs.stat(reg, name, sha256(data))
        got = hashlib.sha256(b"".join(blobs.read(reg, blob))).hexdigest()
        assert "sha256:" + got == sha256(data)


def test_delete_then_restore_brings_back_tags_and_data(reg):
    d, content = put_image(reg, "team/app", "v1", "a")
    manifests.put(reg, "team/app", "stable", manifests.get(reg, "team/app", "v1").payload,
                  "application/vnd.oci.image.manifest.v1+json")
    deletes.unlink_blob(reg, "team/app", sha256(content[-1]))  # a client also unlinked a layer
    deletes.delete_manifest(reg, "team/app", d, actor="alice")
    with pytest.raises(RegistryError):
        manifests.get(reg, "team/app", d)
    listed = trash.listing(reg)["images"]
    assert [(i["repository"], i["digest"], sorted(i["tags"]), i["deleted_by"]) for i in listed] == \
        [("team/app", d, ["stable", "v1"], "alice")]
    assert listed[0]["bytes_freed"] == sum(len(c) for c in content)
    assert listed[0]["seconds_left"] == pytest.approx(7 * DAY)
    reg.clock.advance(DAY)
    result = trash.restore(reg, f"team/app@{d}")
    assert sorted(result.restored_tags) == ["stable", "v1"] and not result.skipped_tags
    pull_all(reg, "team/app", d, content)
    assert discovery.tags(reg, "team/app", None, None) == ["stable", "v1"]
    assert trash.listing(reg)["images"] == []


def test_a_moved_tag_is_not_stolen_back(reg):
    old, _ = put_image(reg, "app", "latest", "old")
    deletes.delete_manifest(reg, "app", old)
    new, _ = put_image(reg, "app", "latest", "new")
    result = trash.restore(reg, f"app@{old}")
    assert result.restored_tags == [] and result.skipped_tags == {"latest": f"now points at {new}"}
    assert manifests.get(reg, "app", "latest").digest == new
    assert manifests.get(reg, "app", old).digest == old


def test_deleted_tag_goes_to_trash_and_comes_back(reg):
    d, _ = put_image(reg, "app", "v1", "t")
    deletes.delete_manifest(reg, "app", "v1")
    assert manifests.get(reg, "app", d).digest == d  # still reachable by digest
    assert [t["tag"] for t in trash.listing(reg)["tags"]] == ["v1"]
    result = trash.restore(reg, "app:v1")
    assert result.restored_tags == ["v1"]
    assert manifests.get(reg, "app", "v1").digest == d
    with pytest.raises(RegistryError):
        trash.restore(reg, "app:v1")


def test_scrubber_purges_after_scrub_time_and_data_goes(reg):
    d, content = put_image(reg, "app", "v1", "s")
    keep, kept = put_image(reg, "app", "v2", "keep")
    deletes.delete_manifest(reg, "app", d)
    reg.clock.advance(6 * DAY)
    assert Scrubber.for_registry(reg).run().kinds["images"].objects == 0
    reg.clock.advance(DAY + 1)
    preview = Scrubber.for_registry(reg, dry_run=True).run()
    assert preview.kinds["images"].objects == 1 and preview.kinds["images"].bytes == sum(len(c) for c in content)
    report = Scrubber.for_registry(reg).run()
    assert report.kinds["images"].objects == 1
    assert report.kinds["blobs"].objects == 0  # links keep gc_delay: a push may have just relied on them
    reg.clock.advance(reg.config.gc_delay + 1)
    report = Scrubber.for_registry(reg).run()
    assert report.kinds["blobs"].objects == len(content)
    assert report.kinds["blobs"].bytes == sum(len(c) for c in content)
    assert not {sha256(c) for c in content} & stored_blobs(reg)
    pull_all(reg, "app", keep, kept)
    with pytest.raises(RegistryError, match="purged"):
        trash.restore(reg, f"app@{d}")


@pytest.mark.parametrize("reg", [{"delayed_delete": False}], indirect=True)
def test_without_delayed_delete_images_are_purged_at_once(reg):
    d, content = put_image(reg, "app", "v1", "now")
    deletes.delete_manifest(reg, "app", d)
    assert trash.listing(reg) == {"images": [], "tags": []}
    with pytest.raises(RegistryError):
        trash.restore(reg, f"app@{d}")
    assert {sha256(c) for c in content} <= stored_blobs(reg)  # no storage delete in the request
    reg.clock.advance(reg.config.gc_delay + 1)
    Scrubber.for_registry(reg).run()
    reg.clock.advance(reg.config.gc_delay + 1)
    Scrubber.for_registry(reg).run()
    assert not {sha256(c) for c in content} & stored_blobs(reg)


def test_repository_delete_and_restore(reg):
    d1, c1 = put_image(reg, "team/svc", "v1", "r1")
    d2, _ = put_image(reg, "team/svc", "v2", "r2")
    deletes.delete_repository(reg, "team/svc", actor="ops")
    assert discovery.catalog(reg, None, None) == []
    assert {i["digest"] for i in trash.listing(reg, "team/*")["images"]} == {d1, d2}
    trash.restore(reg, f"team/svc@{d1}")
    assert discovery.catalog(reg, None, None) == ["team/svc"]
    assert discovery.tags(reg, "team/svc", None, None) == ["v1"]
    pull_all(reg, "team/svc", d1, c1)


def test_restore_of_an_index_restores_its_children(reg):
    amd, c_amd = put_image(reg, "multi", None, "amd")
    arm, _ = put_image(reg, "multi", None, "arm")
    idx = put_index(reg, "multi", "v1", [amd, arm])
    deletes.delete_repository(reg, "multi")
    result = trash.restore(reg, f"multi@{idx}")
    assert result.restored_manifests == 3 and result.restored_tags == ["v1"]
    pull_all(reg, "multi", amd, c_amd)


def test_purge_one_image_now(reg):
    d, content = put_image(reg, "app", "v1", "p")
    deletes.delete_manifest(reg, "app", d)
    preview = trash.purge(reg, f"app@{d}", dry_run=True)
    assert preview.bytes_freed == sum(len(c) for c in content)
    assert trash.listing(reg)["images"]
    trash.purge(reg, f"app@{d}")
    assert trash.listing(reg)["images"] == []
    reg.clock.advance(reg.config.gc_delay + 1)  # the links keep their grace, then the data goes
    from dockyard.lifecycle.collector import Collector
    Collector.for_registry(reg).run()
    assert not {sha256(c) for c in content} & stored_blobs(reg)


def test_restore_and_scrub_race(reg):
    """Restores and a scrubber on the same due images at once: each image ends either
    restored with all its data, or purged and gone; never active with data missing."""
    images = [put_image(reg, "race", f"t{i}", f"race{i}") for i in range(24)]
    for d, _ in images:
        deletes.delete_manifest(reg, "race", d)
    reg.clock.advance(8 * DAY)
    restored, failed = [], []

    def restorer(chunk):
        for d, content in chunk:
            try:
                trash.restore(reg, f"race@{d}")
                restored.append((d, content))
            except RegistryError:
                failed.append(d)

    threads = [threading.Thread(target=restorer, args=(images[i::3],)) for i in range(3)]
    scrub = threading.Thread(target=lambda: Scrubber.for_registry(reg, batch_size=2).run())
    scrub.start()
    for t in threads:
        t.start()
    for t in threads + [scrub]:
        t.join(60)
    Scrubber.for_registry(reg).run()  # whatever was left due
    assert len(restored) + len(failed) == len(images)
    for d, content in restored:
        pull_all(reg, "race", d, content)
    for d in failed:
        with pytest.raises(RegistryError):
            manifests.get(reg, "race", d)


def test_scrub_daemon_runs_thousands_of_cycles_without_growing(reg, backend):
    put_image(reg, "daemon", "v1", "d")
    cycles = 2000 if backend == "sqlite" else 600

    def fake_wait(event, seconds):
        reg.clock.advance(seconds)
        return event.is_set()

    runner = Runner("scrub", lambda: Scrubber.for_registry(reg), 300, wait=fake_wait)
    for i in range(20):  # work for the first cycles: images deleted, scrubbed, collected
        d, _ = put_image(reg, "daemon", f"w{i}", f"w{i}")
        deletes.delete_manifest(reg, "daemon", d)
    # warm up caches: SQLAlchemy's compiled-statement cache fills for the first ~2,000 cycles
    # (bounded: measured +557 KB over cycles 200-2,200, then +71 KB over the next 2,000)
    warm = 1000
    runner.run_forever(max_cycles=warm)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    runner.run_forever(max_cycles=warm + cycles)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    growth = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert runner.cycles == warm + cycles and runner.failures == 0
    assert growth < 512 * 1024, f"memory grew by {growth} bytes over {cycles} cycles"


def test_trash_purge_cli_says_when_the_bytes_go(tmp_path, capsys):
    """Not 'freed 0 bytes': what a purge will free, and that it happens after gc_delay."""
    import time

    from dockyard.cli import main

    with make_registry(tmp_path, "sqlite") as reg:
        reg.clock.t = time.time()
        d, _ = put_image(reg, "app", "v1", "purge-me")
        deletes.delete_manifest(reg, "app", d)
    assert main(["trash", "purge", f"app@{d}", "--dry-run", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "would free" in out and "with the first collection 1h after the purge" in out
    assert main(["trash", "purge", f"app@{d}", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "purged; its" in out and "freed by the first collection after 1h" in out
    assert " 0 bytes" not in out
