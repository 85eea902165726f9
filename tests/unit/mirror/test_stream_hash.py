"""The push path's commit with a hash computed by the producer (``uploads.StreamHash``, what
the mirror's stream uses so each byte is hashed once): it commits only bytes whose digest
and size that hash verified, never a blob it did not see whole or that does not match."""

from __future__ import annotations

import pytest

from dockyard.errors import RegistryError
from dockyard.registry import blobs, uploads
from tests.support import sha256

BACKENDS = ["sqlite"]


def hashed_chunks(parts: list[bytes], hashed: uploads.StreamHash, skip: int | None = None):
    for i, part in enumerate(parts):
        if i != skip:
            hashed.update(part)
        yield part


def _absent(reg, name: str, digest: str) -> None:
    with pytest.raises(RegistryError) as exc:
        blobs.stat(reg, name, digest)
    assert exc.value.code in ("BLOB_UNKNOWN", "NAME_UNKNOWN")
    d = digest.split(":", 1)[1]
    assert reg.storage.stat(f"blobs/sha256/{d[:2]}/{d}") is None


def test_a_verified_stream_hash_commits_without_hashing_again(reg, monkeypatch):
    parts = [b"a" * 70_000, b"b" * 5, b"c" * 130_000]
    data = b"".join(parts)
    monkeypatch.setattr(uploads, "_rehash", lambda *a, **k: pytest.fail("the staged bytes were hashed again"))
    hashed = uploads.StreamHash("sha256")
    blob = uploads.push_whole(reg, "hub/app", sha256(data), hashed_chunks(parts, hashed), len(data), hashed=hashed)
    assert blob.size == len(data) and hashed.size == len(data)
    got = blobs.stat(reg, "hub/app", sha256(data))
    assert b"".join(blobs.read(reg, got)) == data


def test_a_stream_hash_of_other_bytes_commits_nothing(reg):
    parts = [b"x" * 40_000, b"y" * 40_000]
    claimed = sha256(b"the blob the upstream named")
    hashed = uploads.StreamHash("sha256")
    with pytest.raises(RegistryError) as exc:
        uploads.push_whole(reg, "hub/app", claimed, hashed_chunks(parts, hashed), 80_000, hashed=hashed)
    assert exc.value.code == "DIGEST_INVALID"
    _absent(reg, "hub/app", claimed)


def test_a_stream_hash_that_missed_a_chunk_commits_nothing(reg):
    """The producer's hash matches the digest but did not see every byte written: refused."""
    parts = [b"p" * 50_000, b"q" * 1_000]
    hashed = uploads.StreamHash("sha256")
    with pytest.raises(RegistryError) as exc:  # the digest of the first part only, as hashed
        uploads.push_whole(reg, "hub/app", sha256(parts[0]), hashed_chunks(parts, hashed, skip=1), hashed=hashed)
    assert exc.value.code == "DIGEST_INVALID"
    _absent(reg, "hub/app", sha256(parts[0]))
