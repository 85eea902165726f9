"""Upload sessions in process (SQLite and PostgreSQL, fake clock): one writer at a time,
nothing a failed request wrote survives it, and staged data is reclaimed through the
collector, promptly, never by a request."""

from __future__ import annotations

import threading

import pytest

from dockyard import faults
from dockyard.errors import Conflict, RegistryError
from dockyard.lifecycle.collector import Collector
from dockyard.registry import uploads
from dockyard.storage import paths
from tests.support import sha256


# read by the shared ``reg`` fixture (tests/conftest.py)
BACKENDS = ["sqlite", "postgres"]


def staged(reg, upload) -> bytes | None:
    key = paths.upload_key(upload.id)
    return b"".join(reg.storage.read(key)) if reg.storage.stat(key) is not None else None


def test_starting_a_session_writes_no_storage(reg):
    up = uploads.start(reg, "app")
    assert staged(reg, up) is None  # nothing to leak if the database fails next
    blob = uploads.finish(reg, "app", up, sha256(b""))  # an empty blob still commits
    assert blob.size == 0


def test_a_second_writer_is_refused_while_the_first_holds_the_session(reg):
    up = uploads.start(reg, "app")
    with faults.hold("uploads.written") as h:
        first = threading.Thread(target=uploads.write, args=(reg, up, [b"first"]))
        first.start()
        assert h.reached.wait(30)
        with pytest.raises(RegistryError) as err:
            uploads.write(reg, up, [b"second!"])
        assert err.value.code == "BLOB_UPLOAD_INVALID" and isinstance(err.value, Conflict)
        with pytest.raises(RegistryError):
            uploads.finish(reg, "app", up, sha256(b"first"))
        with pytest.raises(RegistryError):
            uploads.cancel(reg, "app", up.id)
        h.release()
        first.join(30)
    assert staged(reg, up) == b"first"
    up = uploads.get(reg, "app", up.id)
    assert up.size == 5
    assert uploads.finish(reg, "app", up, sha256(b"first")).size == 5


def test_a_writer_whose_lease_ran_out_loses_the_session_and_acknowledges_nothing(reg):
    up = uploads.start(reg, "app")
    errors = []

    def stalled():
        try:
            uploads.write(reg, up, [b"stalled"])
        except RegistryError as exc:
            errors.append(exc)

    with faults.hold("uploads.written") as h:
        first = threading.Thread(target=stalled)
        first.start()
        assert h.reached.wait(30)
        reg.clock.advance(uploads.CLAIM_LEASE + 1)  # as if its process had died
        second = uploads.write(reg, up, [b"taken over"])
        h.release()
        first.join(30)
    assert errors and isinstance(errors[0], Conflict)
    assert second.size == len(b"taken over")
    assert uploads.get(reg, "app", up.id).size == len(b"taken over")
    assert uploads.finish(reg, "app", second, sha256(b"taken over")).size == len(b"taken over")


def test_a_failed_write_is_cut_back_to_the_acknowledged_bytes(reg):
    up = uploads.write(reg, uploads.start(reg, "app"), [b"kept"])

    def failing():
        yield b"lost bytes"
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError):
        uploads.write(reg, up, failing())
    assert staged(reg, up) == b"kept"
    with pytest.raises(RegistryError) as err:
        uploads.write(reg, up, [b"x" * 20], expected_length=10)  # longer than announced
    assert err.value.code == "SIZE_INVALID"
    assert staged(reg, up) == b"kept"
    assert uploads.finish(reg, "app", uploads.get(reg, "app", up.id), sha256(b"kept")).size == 4


def test_cancelled_and_failed_sessions_are_reclaimed_by_the_next_collection(reg):
    cancelled = uploads.write(reg, uploads.start(reg, "app"), [b"cancel me"])
    uploads.cancel(reg, "app", cancelled.id)
    wrong = uploads.write(reg, uploads.start(reg, "app"), [b"wrong digest"])
    with pytest.raises(RegistryError):
        uploads.finish(reg, "app", wrong, sha256(b"something else"))
    assert staged(reg, cancelled) is not None and staged(reg, wrong) is not None  # no delete in a request
    report = Collector.for_registry(reg).run()  # long before upload_ttl
    assert report.kinds["uploads"].objects == 2
    assert staged(reg, cancelled) is None and staged(reg, wrong) is None


def test_an_honest_push_replaces_a_blob_stored_with_the_wrong_size(reg):
    """A blob row an older version committed with a size its object does not have (the
    chunk-longer-than-Content-Range bug) is not deduplicated onto: the next verified push of
    those bytes commits them again, and size and content agree afterwards."""
    from sqlalchemy import update

    from dockyard.meta.schema import blobs as blob_rows
    from dockyard.registry import blobs

    data = b"0123456789"
    digest = sha256(data)
    up = uploads.write(reg, uploads.start(reg, "app"), [data])
    uploads.finish(reg, "app", up, digest)
    reg.storage.write_at("uploads/" + "a" * 32, 0, [data * 4])  # what the old bug left: 40 bytes stored
    reg.storage.move("uploads/" + "a" * 32, paths.blob_key(digest))
    with reg.db.write() as conn:
        conn.execute(update(blob_rows).where(blob_rows.c.digest == digest).values(size=40))
    up = uploads.write(reg, uploads.start(reg, "other"), [data])
    assert uploads.finish(reg, "other", up, digest).size == 10
    blob = blobs.stat(reg, "other", digest)
    assert blob.size == 10 and b"".join(blobs.read(reg, blob)) == data
