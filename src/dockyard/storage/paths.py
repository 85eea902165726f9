"""The storage layout, the only place that builds keys::

    blobs/
      sha256/
        ab/
          abcdef...            one object per blob, shared by every repository
      sha512/...
    uploads/
      <uuid>                   staging data of one upload session

Manifests, tags and links live in the database, not in storage. Keys are built
only from validated digests and server-generated upload ids, never from a
repository name or any other client string.
"""

from __future__ import annotations

import re
import uuid

from dockyard.oci.digest import Digest

BLOBS = "blobs/"
UPLOADS = "uploads/"
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")


def blob_key(digest: str | Digest) -> str:
    d = digest if isinstance(digest, Digest) else Digest.parse(digest)
    return f"{BLOBS}{d.algorithm}/{d.hex[:2]}/{d.hex}"


def digest_from_blob_key(key: str) -> str | None:
    parts = key.split("/")
    if len(parts) == 4 and parts[0] + "/" == BLOBS:
        return f"{parts[1]}:{parts[3]}"
    return None


def new_upload_id() -> str:
    return uuid.uuid4().hex


def is_upload_id(value: str) -> bool:
    return bool(_UPLOAD_ID.match(value))


def upload_key(upload_id: str) -> str:
    if not is_upload_id(upload_id):
        raise ValueError(f"invalid upload id {upload_id!r}")
    return f"{UPLOADS}{upload_id}"
