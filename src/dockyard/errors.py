"""Domain errors, each carrying its OCI error code.

Exception tree::

    RegistryError                 code + message + detail; rendered once by api/errors.py
    storage.base.StorageError     driver failures (driver, key); never shown to clients as-is
      PathNotFound, InvalidKey

Storage errors are translated into RegistryError (or a logged 500) at the registry
layer; RegistryError into the spec's envelope at the HTTP layer.
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
