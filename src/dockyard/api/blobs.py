"""Blob routes: GET/HEAD (with Range) and DELETE."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response

from dockyard.api import mirror
from dockyard.api.auth import requires
from dockyard.api.common import actor, parse_uint, registry, repo_name, run
from dockyard.api.streaming import body_response, read_start
from dockyard.errors import RegistryError, Unavailable
from dockyard.lifecycle import deletes
from dockyard.registry import blobs

_RANGE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` inclusive for a single byte range, None for the whole blob.

    Numbers past 2**63-1 (say 5,000 digits) are past every blob: a start there is a 416,
    an end or a suffix length there means "to the end" (RFC 9110, 14.1.2)."""
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None  # not a single-range request: serve the whole blob

    def number(text: str) -> int:
        return parse_uint(text, lambda: blobs.range_error(size), saturate=True)

    if not m.group(1):
        suffix = number(m.group(2))
        if suffix == 0:
            raise blobs.range_error(size)
        return max(0, size - suffix), size - 1
    start = number(m.group(1))
    end = number(m.group(2)) if m.group(2) else size - 1
    if start >= size or end < start:
        raise blobs.range_error(size)
    return start, min(end, size - 1)


def _headers(digest: str, length: int) -> dict[str, str]:
    return {
        "Docker-Content-Digest": digest,
        "Content-Length": str(length),
        "Content-Type": "application/octet-stream",
        "ETag": f'"{digest}"',
        "Accept-Ranges": "bytes",
    }


def _answer(reg, name: str, digest: str, range_header: str | None, method: str) -> Response | RegistryError:
    """Blocking, in one worker-thread call: the blob's row, its range, and for a GET the start
    of its bytes (the whole of a one-chunk blob, e.g. a cached layer of up to 1 MiB: no other
    thread hop). A blob this repository does not have is returned (the mirror may fetch it),
    not raised; every other error is raised."""
    try:
        blob = blobs.stat(reg, name, digest)
    except Unavailable:  # the database or storage cannot answer: a 503 (and a retry of a conflict), no mirror fetch
        raise
    except RegistryError as exc:
        return exc
    span = parse_range(range_header, blob.size)
    start, end = span if span else (0, blob.size - 1)
    length = end - start + 1 if blob.size else 0
    headers = _headers(blob.digest, length)
    status = 200
    if span:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{blob.size}"
    if method == "HEAD":
        return Response(status_code=status, headers=headers)
    if reg.config.s3_redirect and not span:
        url = blobs.redirect_url(reg, blob)
        if url:
            return Response(status_code=307, headers={"Location": url, "Docker-Content-Digest": blob.digest})
    return body_response(read_start(lambda: blobs.read(reg, blob, start, length)), status, headers)


@requires("pull", "repository")
async def get_blob(request: Request) -> Response:
    reg = registry(request)
    name = repo_name(request)
    digest = request.path_params["digest"]
    args = (reg, name, digest, request.headers.get("range"), request.method)
    answer = await run(_answer, *args)
    if isinstance(answer, RegistryError):
        through = await mirror.blob_miss(request, name, digest, answer)
        if through is not None:
            return through
        answer = await run(_answer, *args)
        if isinstance(answer, RegistryError):
            raise answer
    return answer


@requires("push", "repository")
async def delete_blob(request: Request) -> Response:
    await run(deletes.unlink_blob, registry(request), repo_name(request), request.path_params["digest"],
              actor(request))
    return Response(status_code=202)
