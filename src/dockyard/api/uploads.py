"""Upload routes: POST (start, monolithic, mount), PATCH, PUT, GET status, DELETE."""

from __future__ import annotations

import re
from functools import partial

from starlette.requests import Request
from starlette.responses import Response

from dockyard.api import mirror
from dockyard.api.auth import requires
from dockyard.api.common import registry, repo_name, run
from dockyard.api.streaming import consume_body
from dockyard.errors import RegistryError, UploadOutOfOrder
from dockyard.meta.uploads import Upload
from dockyard.registry import blobs, uploads
from dockyard.validate import check_name

# at most 19 digits: below 2**63, and never a number Python refuses to convert
_CONTENT_RANGE = re.compile(r"^(?:bytes[ =])?(\d{1,19})-(\d{1,19})(?:/\d{1,19}|/\*)?$")


def _upload_headers(name: str, upload: Upload) -> dict[str, str]:
    return {
        "Location": f"/v2/{name}/blobs/uploads/{upload.id}",
        "Range": f"0-{max(upload.size - 1, 0)}",
        "Docker-Upload-UUID": upload.id,
    }


def _blob_created(name: str, digest: str) -> Response:
    return Response(status_code=201, headers={
        "Location": f"/v2/{name}/blobs/{digest}",
        "Docker-Content-Digest": digest,
    })


def _content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit() or len(value) > 19:
        raise RegistryError("SIZE_INVALID", "invalid Content-Length", {"Content-Length": value[:40]})
    return int(value)


def _has_body(request: Request) -> bool:
    length = _content_length(request)
    return (length or 0) > 0 or "chunked" in request.headers.get("transfer-encoding", "").lower()


async def _write(request: Request, upload: Upload, expected: int | None, start: int | None = None) -> Upload:
    name = repo_name(request)
    try:
        return await consume_body(request, partial(uploads.write, registry(request), upload,
                                                   expected_length=expected, start=start))
    except UploadOutOfOrder as exc:  # tell the client where the session stands
        current = await run(uploads.get, registry(request), name, upload.id)
        exc.headers = _upload_headers(name, current)
        raise


@requires("push", "repository")
async def start_upload(request: Request) -> Response:
    reg = registry(request)
    name = repo_name(request)
    mirror.refuse_push(request, name)
    params = request.query_params
    mount, source = params.get("mount"), params.get("from")
    identity = request.app.state.auth.identify(request)
    # a mount needs pull on its source (without one, on every repository: any may provide it);
    # otherwise it is quietly an ordinary upload, revealing nothing about the source
    if mount and identity.allows("pull", check_name(source) if source else None):
        blob = await run(blobs.mount, reg, name, mount, check_name(source) if source else None)
        if blob is not None:
            return _blob_created(name, blob.digest)
    digest = params.get("digest")
    if digest:  # the whole blob in this request: one session, claimed from its creation
        blob = await consume_body(request, partial(uploads.push_whole, reg, name, digest,
                                                   expected_length=_content_length(request)),
                                  receive_small_first=True)
        return _blob_created(name, blob.digest)
    upload = await run(uploads.start, reg, name)
    return Response(status_code=202, headers=_upload_headers(name, upload))


@requires("push", "repository")
async def patch_upload(request: Request) -> Response:
    reg = registry(request)
    name = repo_name(request)
    upload = await run(uploads.get, reg, name, request.path_params["upload_id"])
    expected = _content_length(request)
    content_range = request.headers.get("content-range")
    if content_range:
        m = _CONTENT_RANGE.match(content_range.strip())
        if not m:
            raise RegistryError("BLOB_UPLOAD_INVALID", "invalid Content-Range", {"Content-Range": content_range},
                                status=416, headers=_upload_headers(name, upload))
        start, end = int(m.group(1)), int(m.group(2))
        if start != upload.size or end < start:
            raise RegistryError("BLOB_UPLOAD_INVALID", "chunk out of order",
                                {"expected_start": upload.size, "Content-Range": content_range},
                                status=416, headers=_upload_headers(name, upload))
        if expected is not None and expected != end - start + 1:
            raise RegistryError("SIZE_INVALID", "Content-Length does not match Content-Range",
                                {"Content-Length": expected, "Content-Range": content_range})
        expected = end - start + 1
        # checked again under the session's claim: another request may move the end meanwhile
        upload = await _write(request, upload, expected, start)
    else:
        upload = await _write(request, upload, expected)
    return Response(status_code=202, headers=_upload_headers(name, upload))


@requires("push", "repository")
async def put_upload(request: Request) -> Response:
    reg = registry(request)
    name = repo_name(request)
    upload_id = request.path_params["upload_id"]
    digest = request.query_params.get("digest")
    if _has_body(request):  # the last chunk and the commit under one claim of the session
        blob = await consume_body(request, partial(uploads.finish_id, reg, name, upload_id, digest,
                                                   expected_length=_content_length(request)))
    else:
        blob = await run(uploads.finish_id, reg, name, upload_id, digest)
    return _blob_created(name, blob.digest)


@requires("push", "repository")
async def upload_status(request: Request) -> Response:
    name = repo_name(request)
    upload = await run(uploads.get, registry(request), name, request.path_params["upload_id"])
    return Response(status_code=204, headers=_upload_headers(name, upload))


@requires("push", "repository")
async def cancel_upload(request: Request) -> Response:
    await run(uploads.cancel, registry(request), repo_name(request), request.path_params["upload_id"])
    return Response(status_code=204)
