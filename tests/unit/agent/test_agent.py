"""The agent's files and directory runtime, in process: verified writes, archives that try to
escape, and the cleanup racing a container that takes its image (fault point)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading

import pytest

from dockyard import faults
from dockyard.agent.cleanup import cleanup
from dockyard.agent.files import DigestMismatch, ImagesDir, copy_verified
from dockyard.agent.runtime import DirectoryRuntime, RuntimeRefused


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _archive(path, entries: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as t:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


def _image(files: ImagesDir, runtime: DirectoryRuntime, seed: str, *, pulled_at: float, managed=False) -> str:
    manifest = json.dumps({"seed": seed}).encode()
    digest = _digest(manifest)
    index = {"manifests": [{"digest": digest, "annotations": {"dev.dockyard.repository": "team/app",
                                                               "dev.dockyard.bytes": "100"}}]}
    tar = files.tar_path(digest)
    _archive(tar, {"oci-layout": b"{}", "index.json": json.dumps(index).encode(),
                   f"blobs/sha256/{digest[7:]}": manifest})
    runtime.load(tar, "team/app", None, digest)
    files.write_json(files.state_path(digest), {"digest": digest, "managed": managed, "pulled_at": pulled_at})
    return digest


def test_copy_verified_refuses_wrong_bytes(tmp_path):
    with open(tmp_path / "f", "wb") as out:
        assert copy_verified([b"ab", b"c"], out, _digest(b"abc"), 3) == 3
    for chunks, size in (([b"abd"], 3), ([b"abcd"], 3), ([b"ab"], 3)):
        with open(tmp_path / "g", "wb") as out, pytest.raises(DigestMismatch):
            copy_verified(chunks, out, _digest(b"abc"), size)


@pytest.mark.parametrize("name", ["../evil", "blobs/sha256/../../x", "blobs/md5/abc", "/etc/passwd"])
def test_archive_entries_outside_the_layout_are_refused(tmp_path, name):
    files = ImagesDir(tmp_path)
    runtime = DirectoryRuntime(files)
    _archive(tmp_path / "bad.tar", {"oci-layout": b"{}", name: b"x"})
    with pytest.raises(RuntimeRefused):
        runtime.load(tmp_path / "bad.tar", "team/app", "v1", _digest(b"x"))
    assert list(runtime.images()) == [] and list(files.temporaries()) == []


def test_archive_blob_that_lies_about_its_digest_is_refused(tmp_path):
    files = ImagesDir(tmp_path)
    _archive(tmp_path / "lie.tar", {"oci-layout": b"{}", f"blobs/sha256/{_digest(b'a')[7:]}": b"b"})
    with pytest.raises(RuntimeRefused):
        DirectoryRuntime(files).load(tmp_path / "lie.tar", "team/app", "v1", _digest(b"a"))


def test_cleanup_keeps_images_in_use_managed_or_young_and_a_container_taking_one_meanwhile(tmp_path):
    files = ImagesDir(tmp_path)
    runtime = DirectoryRuntime(files)
    now = 1_000_000.0
    old = _image(files, runtime, "old", pulled_at=now - 100)
    taken = _image(files, runtime, "taken", pulled_at=now - 100)
    used = _image(files, runtime, "used", pulled_at=now - 100)
    managed = _image(files, runtime, "managed", pulled_at=now - 100, managed=True)
    young = _image(files, runtime, "young", pulled_at=now - 5)
    runtime.create_container("web", used)
    dry = cleanup(files, runtime, now, 60, dry_run=True)
    assert {i["digest"] for i in dry.images} == {old, taken} and dry.bytes > 200
    assert len(list(runtime.images())) == 5

    result = {}
    with faults.hold("agent.cleanup_planned") as h:
        t = threading.Thread(target=lambda: result.update(report=cleanup(files, runtime, now, 60, dry_run=False)))
        t.start()
        assert h.reached.wait(10)
        runtime.create_container("late", taken)  # a container takes the image between plan and removal
        h.release()
        t.join(10)
    report = result["report"]
    assert [i["digest"] for i in report.images] == [old]
    assert [r["digest"] for r in report.refused] == [taken]
    left = {i.digest for i in runtime.images()}
    assert left == {taken, used, managed, young}
    assert not files.tar_path(old).exists() and files.tar_path(taken).exists()
