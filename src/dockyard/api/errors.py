"""The one table from OCI error code to HTTP status, and the spec's error envelope."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dockyard.errors import Conflict, RangeNotSatisfiable, RegistryError, Unavailable, UploadOutOfOrder
from dockyard.storage.base import StorageError, StorageFull

log = logging.getLogger(__name__)

STATUS = {
    "BLOB_UNKNOWN": 404,
    "BLOB_UPLOAD_INVALID": 400,
    "BLOB_UPLOAD_UNKNOWN": 404,
    "DIGEST_INVALID": 400,
    "MANIFEST_BLOB_UNKNOWN": 400,
    "MANIFEST_INVALID": 400,
    "MANIFEST_UNKNOWN": 404,
    "NAME_INVALID": 400,
    "NAME_UNKNOWN": 404,
    "SIZE_INVALID": 400,
    "UNAUTHORIZED": 401,
    "DENIED": 403,
    "UNSUPPORTED": 405,
    "TOOMANYREQUESTS": 429,
    "PAGINATION_NUMBER_INVALID": 400,
    "UNKNOWN": 500,
    "UNAVAILABLE": 503,  # the database (or another dependency) fails: retry after Retry-After
}


def envelope(code: str, message: str, detail=None) -> dict:
    return {"errors": [{"code": code, "message": message, "detail": detail}]}


def status_and_headers(exc: RegistryError) -> tuple[int, dict[str, str]]:
    """How HTTP spells a domain error: by its class where the class says more than its OCI code
    (a conflict, a range, a dependency that fails), else by the code."""
    headers = dict(exc.headers)
    if isinstance(exc, Unavailable):
        headers.setdefault("Retry-After", str(exc.retry_after))
        return 503, headers
    if isinstance(exc, Conflict):
        return 409, headers
    if isinstance(exc, RangeNotSatisfiable):
        if not isinstance(exc, UploadOutOfOrder):
            headers.setdefault("Content-Range", f"bytes */{exc.size}")
        return 416, headers
    return exc.status or STATUS.get(exc.code, 400), headers


def render(exc: RegistryError, request: Request | None = None) -> Response:
    status, headers = status_and_headers(exc)
    if request is not None and request.method == "HEAD":
        return Response(status_code=status, headers=headers)
    return JSONResponse(envelope(exc.code, exc.message, exc.detail), status_code=status, headers=headers)


async def registry_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RegistryError)
    response = render(exc, request)
    if response.status_code >= 500:  # a fault, not the client's: one line, no traceback
        log.warning("%s %s: %d %s (%s)", request.method, request.url.path, response.status_code, exc.code,
                    getattr(exc, "reason", None) or exc.message)
    return response


async def storage_error_handler(request: Request, exc: Exception) -> Response:
    """The storage backend failed (unreachable, full, refusing): the client may retry; one log
    line, no traceback. A full disk also releases the registry's disk reserve."""
    assert isinstance(exc, StorageError)
    reserve = getattr(getattr(request.app.state, "registry", None), "reserve", None)
    if isinstance(exc, StorageFull) and reserve is not None:
        reserve.release(str(exc))
    log.warning("%s %s: 503 storage failure (%s)", request.method, request.url.path, exc)
    return render(Unavailable("the registry's storage is unavailable; retry later"), request)


async def unexpected_error_handler(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return render(RegistryError("UNKNOWN", "internal server error"), request)


async def not_found_handler(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 404)
    if status == 405:
        return render(RegistryError("UNSUPPORTED", "method not allowed"), request)
    return render(RegistryError("NAME_UNKNOWN" if request.url.path.startswith("/v2/") else "UNSUPPORTED",
                                "not found", status=404), request)
