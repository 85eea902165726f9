"""Content discovery routes: tags list, catalog, referrers."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dockyard.api.auth import requires
from dockyard.api.common import next_link, page_params, registry, repo_name, run
from dockyard.oci import mediatypes as mt
from dockyard.registry import discovery


@requires("pull", "repository")
async def tags_list(request: Request) -> Response:
    name = repo_name(request)
    limit, last = page_params(request)
    fetched = await run(discovery.tags, registry(request), name, None if limit is None else limit + 1, last)
    items = fetched[:limit] if limit is not None else fetched
    headers = next_link(f"/v2/{name}/tags/list", items, limit, len(fetched) > len(items))
    return JSONResponse({"name": name, "tags": items}, headers=headers)


@requires("pull", "somewhere")
async def catalog(request: Request) -> Response:
    limit, last = page_params(request)
    identity = request.app.state.auth.identify(request)
    want = None if limit is None else limit + 1
    if identity.allows("pull"):  # the global role: every repository
        fetched = await run(discovery.catalog, registry(request), want, last)
    else:  # access rules: page through the names, keeping those the caller may pull
        fetched = await run(discovery.catalog_filtered, registry(request), want, last,
                            lambda name: identity.role_on(name) != "none")
    items = fetched[:limit] if limit is not None else fetched
    headers = next_link("/v2/_catalog", items, limit, len(fetched) > len(items))
    return JSONResponse({"repositories": items}, headers=headers)


@requires("pull", "repository")
async def referrers(request: Request) -> Response:
    artifact_type = request.query_params.get("artifactType") or None
    found = await run(discovery.referrers, registry(request), repo_name(request), request.path_params["digest"],
                      artifact_type)
    manifests = []
    for r in found:
        entry = {"mediaType": r.media_type, "digest": r.digest, "size": r.size}
        if r.artifact_type:
            entry["artifactType"] = r.artifact_type
        if r.annotations:
            entry["annotations"] = r.annotations
        manifests.append(entry)
    headers = {"OCI-Filters-Applied": "artifactType"} if artifact_type else {}
    return JSONResponse({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": manifests},
                        headers=headers, media_type=mt.OCI_INDEX)
