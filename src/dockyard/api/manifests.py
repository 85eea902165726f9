"""Manifest routes: GET/HEAD (negotiated), PUT, DELETE."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from dockyard.lifecycle import deletes
from dockyard.api import mirror
from dockyard.api.auth import requires
from dockyard.api.common import actor, registry, repo_name, run
from dockyard.errors import RegistryError
from dockyard.oci.manifest import MAX_MANIFEST_BYTES
from dockyard.registry import manifests


def _accept(request: Request) -> list[str]:
    values = []
    for header in request.headers.getlist("accept"):
        for item in header.split(","):
            item = item.split(";")[0].strip()
            if item:
                values.append(item)
    return values


@requires("pull", "repository")
async def get_manifest(request: Request) -> Response:
    name, reference = repo_name(request), request.path_params["reference"]
    through = await mirror.manifest(request, name, reference, _accept(request))
    m, extra = through or (await run(manifests.get, registry(request), name, reference, _accept(request)), {})
    headers = {**extra,
        "Docker-Content-Digest": m.digest,
        "Content-Type": m.media_type,
        "Content-Length": str(m.size),
        "ETag": f'"{m.digest}"',
    }
    if request.method == "HEAD":
        return Response(status_code=200, headers=headers)
    reg = registry(request)
    if m.id:  # (a mirrored manifest is stored once what it references is here)
        reg.pulls.record(m.id, reg.now())
    return Response(m.payload, status_code=200, headers=headers, media_type=m.media_type)


async def _read_limited(request: Request) -> bytes:
    length = request.headers.get("content-length")
    too_big = RegistryError("MANIFEST_INVALID", f"manifest exceeds {MAX_MANIFEST_BYTES} bytes",
                            {"limit": MAX_MANIFEST_BYTES}, status=413)
    if length and length.isdigit() and int(length) > MAX_MANIFEST_BYTES:
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_MANIFEST_BYTES:
            raise too_big
    return bytes(body)


@requires("push", "repository")
async def put_manifest(request: Request) -> Response:
    name = repo_name(request)
    mirror.refuse_push(request, name)
    reference = request.path_params["reference"]
    payload = await _read_limited(request)
    result = await run(manifests.put, registry(request), name, reference, payload,
                       request.headers.get("content-type"), actor(request))
    headers = {
        "Location": f"/v2/{name}/manifests/{result.manifest.digest}",
        "Docker-Content-Digest": result.manifest.digest,
    }
    if result.subject:
        headers["OCI-Subject"] = result.subject
    return Response(status_code=201, headers=headers)


@requires("push", "repository")
async def delete_manifest(request: Request) -> Response:
    await run(deletes.delete_manifest, registry(request), repo_name(request), request.path_params["reference"],
              actor(request))
    return Response(status_code=202)
