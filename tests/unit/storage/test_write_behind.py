"""Flush as you go (issue 16): a large write starts the writeback of each range it wrote,
in order and without gaps, so the fsync before the commit finds little left; the bytes
are the same as without it."""

import os

import pytest

from dockyard.storage import filesystem
from dockyard.storage.filesystem import FilesystemDriver

pytestmark = pytest.mark.skipif(filesystem._SFR is None, reason="no sync_file_range on this platform")


def test_writeback_follows_the_write_in_contiguous_ranges(tmp_path, monkeypatch):
    calls = []
    real = filesystem._SFR

    def recording(fd, offset, length, flags):
        calls.append((offset, length, flags))
        return real(fd, offset, length, flags)

    monkeypatch.setattr(filesystem, "_SFR", recording)
    monkeypatch.setattr(filesystem, "FLUSH_EVERY", 64 * 1024)
    d = FilesystemDriver(tmp_path)
    head = os.urandom(10_000)
    assert d.write_at("uploads/u", 0, [head]) == len(head)  # below FLUSH_EVERY: nothing started
    assert calls == []
    chunks = [os.urandom(50_000) for _ in range(20)]
    end = d.write_at("uploads/u", len(head), chunks)  # resumed at an offset, as a PATCH is
    assert end == len(head) + 1_000_000
    started = [(o, n) for o, n, f in calls if f == filesystem._SFR_WRITE]
    waited = [(o, n) for o, n, f in calls if f != filesystem._SFR_WRITE]
    assert started[0][0] == len(head)
    for (o1, n1), (o2, _) in zip(started, started[1:]):
        assert o1 + n1 == o2  # no gap, no overlap
    assert end - (started[-1][0] + started[-1][1]) < 64 * 1024 + 50_000
    assert waited == started[:len(waited)] and len(waited) == len(started) - 1  # one range behind
    d.move("uploads/u", "blobs/u")
    assert b"".join(d.read("blobs/u")) == head + b"".join(chunks)


def test_no_writeback_without_fsync(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(filesystem, "_SFR", lambda *a: calls.append(a) or 0)
    monkeypatch.setattr(filesystem, "FLUSH_EVERY", 1024)
    FilesystemDriver(tmp_path, fsync=False).write_at("uploads/u", 0, [os.urandom(10_000)] * 3)
    assert calls == []
