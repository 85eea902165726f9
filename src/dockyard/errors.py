"""Domain errors, each carrying its OCI error code.

Exception tree::

    RegistryError                 code + message + detail; rendered once by api/errors.py
      Conflict                    the object is busy or in a state that forbids this now
      RangeNotSatisfiable         a byte range outside the object (carries its size)
        UploadOutOfOrder          a chunk that does not start at the session's end
      Unavailable                 a dependency fails; the same request later may succeed
        meta.db.DatabaseUnavailable, DatabaseConflict
    storage.base.StorageError     driver failures (driver, key); never shown to clients as-is
      PathNotFound, InvalidKey, StorageFull

Domain code says what happened (the class and the OCI code), never how HTTP spells it:
the status and headers of each class are chosen in one table in ``api/errors.py``.
Storage errors that reach a request are a 503 there.
"""

from __future__ import annotations

from typing import Any


class RegistryError(Exception):
    def __init__(self, code: str, message: str = "", detail: Any = None, *, status: int | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message or code)
        self.code = code
        self.message = message or code.lower().replace("_", " ")
        self.detail = detail
        self.status = status
        self.headers = headers or {}


def blob_unknown(digest: str) -> RegistryError:
    return RegistryError("BLOB_UNKNOWN", "blob unknown to registry", {"digest": digest})


def manifest_unknown(reference: str) -> RegistryError:
    return RegistryError("MANIFEST_UNKNOWN", "manifest unknown", {"reference": reference})


def name_unknown(name: str) -> RegistryError:
    return RegistryError("NAME_UNKNOWN", "repository name not known to registry", {"name": name})


def upload_unknown(upload_id: str) -> RegistryError:
    return RegistryError("BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", {"upload": upload_id})


def digest_invalid(message: str, digest: str | None = None) -> RegistryError:
    return RegistryError("DIGEST_INVALID", message, {"digest": digest} if digest else None)


class Conflict(RegistryError):
    """The object is busy (another request holds it) or in a state that forbids this now."""


class RangeNotSatisfiable(RegistryError):
    def __init__(self, code: str, message: str, size: int, detail: Any = None):
        super().__init__(code, message, detail if detail is not None else {"size": size})
        self.size = size


class UploadOutOfOrder(RangeNotSatisfiable):
    """A chunk that does not start where the session's acknowledged bytes end."""

    def __init__(self, upload_id: str, size: int, start: int | None = None):
        super().__init__("BLOB_UPLOAD_INVALID", "chunk out of order", size,
                         {"upload": upload_id, "expected_start": size, "start": start})
        self.upload_id = upload_id


class Unavailable(RegistryError):
    """A dependency (database, disk, storage) cannot do the work now; retry after ``retry_after``."""

    def __init__(self, message: str, retry_after: int = 5, detail: Any = None):
        super().__init__("UNAVAILABLE", message, detail)
        self.retry_after = retry_after
