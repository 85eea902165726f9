"""One contract suite, subclassed for every driver (see storage/base.py for the contracts)."""

import hashlib

import pytest

from dockyard.storage.base import InvalidKey, PathNotFound, StorageError
from dockyard.storage.checked import CheckedDriver
from dockyard.storage.filesystem import FilesystemDriver


class DriverSuite:
    @pytest.fixture
    def driver(self, tmp_path):  # pragma: no cover - overridden
        raise NotImplementedError

    def test_write_read_stat(self, driver):
        assert driver.write_at("uploads/aa", 0, [b"hello ", b"world"]) == 11
        assert b"".join(driver.read("uploads/aa")) == b"hello world"
        assert b"".join(driver.read("uploads/aa", 6)) == b"world"
        assert b"".join(driver.read("uploads/aa", 2, 3)) == b"llo"
        info = driver.stat("uploads/aa")
        assert info.size == 11 and info.key == "uploads/aa"
        assert driver.stat("uploads/none") is None

    def test_write_at_offset_truncates_beyond(self, driver):
        driver.write_at("uploads/bb", 0, [b"0123456789"])
        assert driver.write_at("uploads/bb", 4, [b"xy"]) == 6
        assert b"".join(driver.read("uploads/bb")) == b"0123xy"
        with pytest.raises(Exception):
            driver.write_at("uploads/bb", 100, [b"gap"])

    def test_move_commits_and_replaces(self, driver):
        driver.write_at("uploads/cc", 0, [b"data"])
        driver.move("uploads/cc", "blobs/sha256/ab/abc")
        assert driver.stat("uploads/cc") is None
        assert b"".join(driver.read("blobs/sha256/ab/abc")) == b"data"
        driver.write_at("uploads/dd", 0, [b"data"])
        driver.move("uploads/dd", "blobs/sha256/ab/abc")
        assert b"".join(driver.read("blobs/sha256/ab/abc")) == b"data"
        with pytest.raises(PathNotFound):
            driver.move("uploads/missing", "blobs/sha256/ab/zzz")

    def test_delete_is_idempotent(self, driver):
        driver.write_at("uploads/ee", 0, [b"x"])
        driver.delete("uploads/ee")
        driver.delete("uploads/ee")
        assert driver.stat("uploads/ee") is None
        with pytest.raises(PathNotFound):
            b"".join(driver.read("uploads/ee"))

    def test_list_prefix(self, driver):
        for k in ("blobs/sha256/aa/1", "blobs/sha256/ab/2"):
            driver.write_at("uploads/tmp", 0, [b"."])
            driver.move("uploads/tmp", k)
        driver.write_at("uploads/3", 0, [b"."])
        assert sorted(i.key for i in driver.list("blobs/")) == ["blobs/sha256/aa/1", "blobs/sha256/ab/2"]
        assert [i.key for i in driver.list("uploads/")] == ["uploads/3"]
        assert [i.key for i in driver.list("blobs/sha256/ab/")] == ["blobs/sha256/ab/2"]
        assert list(driver.list("nothing/")) == []

    def test_large_stream_is_not_held_in_memory(self, driver):
        chunk = b"z" * (1 << 20)
        h = hashlib.sha256()
        size = driver.write_at("uploads/big", 0, (chunk for _ in range(20)))
        for part in driver.read("uploads/big"):
            assert len(part) <= 4 << 20
            h.update(part)
        assert size == 20 << 20 and h.hexdigest() == hashlib.sha256(chunk * 20).hexdigest()

    @staticmethod
    def _put(driver, key, data=b"."):
        driver.write_at("uploads/tmp", 0, [data])
        driver.move("uploads/tmp", key)

    def test_delete_many_reports_every_key(self, driver):
        keys = ["blobs/sha256/aa/1", "blobs/sha256/ab/2", "blobs/sha256/ac/3"]
        for k in keys:
            self._put(driver, k)
        driver.write_at("uploads/ff", 0, [b"staged"])  # an upload session may be several objects
        missing = "blobs/sha256/ad/never-written"  # missing keys are not errors
        result = driver.delete_many(keys + ["uploads/ff", missing])
        assert result == {k: None for k in keys + ["uploads/ff", missing]}
        assert [driver.stat(k) for k in keys + ["uploads/ff"]] == [None] * 4
        assert list(driver.list("blobs/")) == [] and list(driver.list("uploads/")) == []
        assert driver.delete_many([]) == {}
        assert driver.delete_many(keys) == {k: None for k in keys}  # again: idempotent

    def test_delete_many_past_one_call(self, driver):
        """More keys than one call of any backend takes (S3: 1,000): every one is done."""
        keys = [f"blobs/sha256/{i % 256:02x}/k{i}" for i in range(1001)]
        self._put(driver, keys[0])
        self._put(driver, keys[-1])
        result = driver.delete_many(keys)
        assert set(result) == set(keys) and not any(result.values())
        assert driver.stat(keys[0]) is None and driver.stat(keys[-1]) is None

    def test_delete_many_checks_every_key(self, driver):
        seen = []

        class Recorder:  # what reaches the driver behind the key checks
            def __init__(self, inner):
                self.inner, self.name = inner, inner.name

            def delete_many(self, keys):
                keys = list(keys)
                seen.extend(keys)
                return self.inner.delete_many(keys)

        self._put(driver, "blobs/sha256/aa/good")
        checked = CheckedDriver(Recorder(driver.inner))
        bad = ["../etc/passwd", "/abs", "a//b", "a/../../b", ""]
        result = checked.delete_many(["blobs/sha256/aa/good", *bad])
        assert seen == ["blobs/sha256/aa/good"]
        assert result["blobs/sha256/aa/good"] is None
        assert all(isinstance(result[k], InvalidKey) for k in bad) and len(result) == 1 + len(bad)
        assert driver.stat("blobs/sha256/aa/good") is None

    @pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a//b", "a/./b", "a/../../b", "", "a/b\x00"])
    def test_keys_cannot_escape(self, driver, key):
        with pytest.raises(InvalidKey):
            driver.write_at(key, 0, [b"x"])
        with pytest.raises(InvalidKey):
            driver.stat(key)


class TestFilesystemDriver(DriverSuite):
    @pytest.fixture
    def driver(self, tmp_path):
        return CheckedDriver(FilesystemDriver(tmp_path / "root"))

    def test_delete_many_reports_the_key_that_failed(self, driver, tmp_path):
        self._put(driver, "blobs/sha256/aa/one")
        self._put(driver, "blobs/sha256/aa/two")
        (tmp_path / "root/blobs/sha256/aa/dir").mkdir()  # unlink fails on a directory
        result = driver.delete_many(["blobs/sha256/aa/one", "blobs/sha256/aa/dir", "blobs/sha256/aa/two"])
        assert result["blobs/sha256/aa/one"] is None and result["blobs/sha256/aa/two"] is None
        err = result["blobs/sha256/aa/dir"]
        assert isinstance(err, StorageError) and err.key == "blobs/sha256/aa/dir" and err.driver == "filesystem"
        assert driver.stat("blobs/sha256/aa/one") is None and driver.stat("blobs/sha256/aa/two") is None


class TestLatencyDriver(DriverSuite):
    """The latency wrapper (``storage_latency``) around the filesystem driver: a pass-through."""

    @pytest.fixture
    def driver(self, tmp_path):
        from dockyard.storage.latency import LatencyDriver

        return CheckedDriver(LatencyDriver(FilesystemDriver(tmp_path / "root"), 0.0))

    def test_delete_many_is_one_call(self, driver):
        driver.delete_many([f"blobs/sha256/aa/{i}" for i in range(50)])
        assert driver.inner.calls["delete_many"] == 1 and driver.inner.calls["delete"] == 0


def test_filesystem_writes_race_deletes_in_the_same_directory(tmp_path):
    """Deletes in a directory while writes and moves go into it: every write and move
    succeeds (threads really race here, for a second). By design, not by retries: a delete
    never removes a directory, so there is nothing to race with."""
    import threading
    import time

    fs = FilesystemDriver(tmp_path, fsync=False)
    errors, counts = [], {"writes": 0, "moves": 0}
    stop = time.monotonic() + 1.0

    def worker(n):
        i = 0
        try:
            while time.monotonic() < stop:
                i += 1
                key = f"uploads/w{n}-{i}"
                fs.write_at(key, 0, [b"x"])
                counts["writes"] += 1
                if i % 2:
                    fs.move(key, f"blobs/sha256/ab/w{n}-{i}")
                    counts["moves"] += 1
                    fs.delete(f"blobs/sha256/ab/w{n}-{i}")  # empties blobs/sha256/ab
                else:
                    fs.delete(key)  # empties uploads/
        except Exception as exc:  # pragma: no cover - the failure this test looks for
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert counts["writes"] > 100 and counts["moves"] > 50
    assert (tmp_path / "uploads").is_dir() and (tmp_path / "blobs/sha256/ab").is_dir()


class TestS3Driver(DriverSuite):
    """The same contract against the S3 driver, on moto in server mode (no real S3 here)."""

    @pytest.fixture
    def driver(self, moto, request):
        import os
        import uuid

        from dockyard.storage.s3 import S3Driver
        from tests.support import AWS_TEST_ENV

        os.environ.update({k: v for k, v in AWS_TEST_ENV.items() if k not in os.environ})
        bucket = f"b-{uuid.uuid4().hex[:12]}"
        moto.make_bucket(bucket)
        return CheckedDriver(S3Driver(bucket, prefix="reg/one", endpoint_url=moto.url, region="us-east-1",
                                      path_style=True))

    def test_chunked_upload_is_composed_server_side(self, driver):
        big = b"a" * (5 * 1024 * 1024)
        assert driver.write_at("uploads/cc", 0, [big]) == len(big)
        assert driver.write_at("uploads/cc", len(big), [b"tail"]) == len(big) + 4
        assert driver.stat("uploads/cc").size == len(big) + 4
        driver.move("uploads/cc", "blobs/sha256/cc/ccc")
        assert driver.stat("blobs/sha256/cc/ccc").size == len(big) + 4
        assert b"".join(driver.read("blobs/sha256/cc/ccc", len(big) - 2)) == b"aatail"
        assert driver.stat("uploads/cc") is None

    def test_small_chunks_are_streamed_through(self, driver):
        for i, part in enumerate([b"ab", b"cd", b"ef"]):
            driver.write_at("uploads/dd", 2 * i, [part])
        driver.move("uploads/dd", "blobs/sha256/dd/ddd")
        assert b"".join(driver.read("blobs/sha256/dd/ddd")) == b"abcdef"

    def test_presigned_url(self, driver):
        driver.write_at("uploads/ee", 0, [b"signed"])
        driver.move("uploads/ee", "blobs/sha256/ee/eee")
        import httpx
        url = driver.redirect_url("blobs/sha256/ee/eee", 60)
        assert httpx.get(url).content == b"signed"


class TestS3DriverOnCephRGW(TestS3Driver):
    """The same contract, and the S3 driver's own tests, on a real S3 server: Ceph's RADOS
    Gateway 16.2 (scripts/ceph-rgw), one per test run."""

    @pytest.fixture
    def driver(self, ceph_rgw, monkeypatch):
        import uuid

        import boto3

        from dockyard.storage.s3 import S3Driver

        for name, value in ceph_rgw.aws_env.items():
            monkeypatch.setenv(name, value)
        # boto3's default session keeps the credentials it resolved first (moto's, if those ran first)
        monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
        bucket = f"b-{uuid.uuid4().hex[:12]}"
        ceph_rgw.make_bucket(bucket)
        return CheckedDriver(S3Driver(bucket, prefix="reg/one", endpoint_url=ceph_rgw.url, region="us-east-1",
                                      path_style=True))
