"""The admin API, described: an OpenAPI 3.1 document of every ``/admin/v1`` route.

``GET /admin/v1/openapi.json`` serves it; ``/dashboard/api`` renders it as a page. The
document is data built here, beside the routes; ``tests/integration/test_openapi.py``
checks it against ``api/app.py`` (every admin route described, with the role its handler
requires) and every real answer against its schema.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dockyard import __version__
from dockyard.api.auth import requires

S = "#/components/schemas/"


def ref(name: str) -> dict:
    return {"$ref": S + name}


INT = {"type": "integer", "minimum": 0}
NUM = {"type": "number"}
STR = {"type": "string"}
NULLSTR = {"type": ["string", "null"]}
DIGEST = {"type": "string", "pattern": "^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$"}


def obj(props: dict, required: list[str] | None = None, extra: bool = False) -> dict:
    return {"type": "object", "properties": props, "required": list(props) if required is None else required,
            "additionalProperties": extra}


KIND = obj({"objects": INT, "bytes": INT, "failures": INT})
TOTALS = obj({"objects": INT, "bytes": INT, "failures": INT})
REPORT = obj({
    "job": STR, "dry_run": {"type": "boolean"}, "duration_seconds": NUM,
    "kinds": {"type": "object", "additionalProperties": ref("KindReport")},
    "totals": ref("Totals"),
    "items": {"type": "array", "items": {"type": "object"}, "description": "dry run only: what would go"},
}, required=["job", "dry_run", "duration_seconds", "kinds", "totals"])
RUN = obj({"id": INT, "job": STR, "started_at": NUM, "finished_at": NUM, "dry_run": {"type": "boolean"},
           "host": NULLSTR, "report": ref("Report")})
QUEUE = obj({"pending": INT, "due": INT})
WAITING = obj({"entries": INT, "first_due": NUM})
GC_STATUS = obj({"backlog": {"type": "object", "additionalProperties": ref("Queue")},
                 "waiting": {"type": "object", "additionalProperties": ref("Waiting"),
                             "description": "per queue: entries still in their grace period, and when the first is due"},
                 "runs": {"type": "array", "items": ref("Run")}})
TRASHED_IMAGE = obj({"repository": STR, "digest": DIGEST, "media_type": STR, "deleted_at": NUM,
                     "deleted_by": NULLSTR, "scrub_after": NUM, "tags": {"type": "array", "items": STR},
                     "bytes_freed": INT, "seconds_left": {"type": "number", "minimum": 0}})
TRASHED_TAG = obj({"repository": STR, "tag": STR, "digest": DIGEST, "deleted_at": NUM, "deleted_by": NULLSTR,
                   "scrub_after": NUM, "seconds_left": {"type": "number", "minimum": 0}})
TRASH = obj({"images": {"type": "array", "items": ref("TrashedImage")},
             "tags": {"type": "array", "items": ref("TrashedTag")}})
RESTORE = obj({"reference": STR, "digest": DIGEST, "restored_tags": {"type": "array", "items": STR},
               "skipped_tags": {"type": "object", "additionalProperties": STR}, "restored_manifests": INT})
PURGE = obj({"reference": STR, "dry_run": {"type": "boolean"}, "bytes_freed": INT,
             "freed_after_seconds": {**NUM, "description": "the bytes go with the first collection after this (gc_delay)"},
             "gc_interval_seconds": {**NUM, "description": "how often the server's collector runs"}},
            required=["reference", "dry_run", "bytes_freed"])
GLOBS = {"type": "array", "items": STR}
POLICY = obj({"repositories": GLOBS, "tags_include": GLOBS, "tags_exclude": GLOBS,
              "keep_tag_revisions": INT, "keep_recent": INT,
              "keep_pushed_within": {"type": ["number", "string"], "description": "seconds, or text with a unit: 7d"},
              "keep_pulled_within": {"type": ["number", "string"]},
              "untagged": {"enum": ["delete", "keep"]}, "immutable_tags": GLOBS,
              "schedule": {"type": ["number", "string"]}}, required=[])
DECISION = obj({"digest": DIGEST, "tags": {"type": "array", "items": STR}, "pushed_at": NUM,
                "keep": {"type": "array", "items": STR}, "delete": NULLSTR, "bytes_freed": INT})
PLAN_TOTALS = obj({"repositories": INT, "kept": INT, "deleted": INT, "bytes_freed": INT})
PLAN = obj({"policy": STR, "confirmed": {"type": "boolean"}, "duration_seconds": NUM, "totals": ref("PlanTotals"),
            "repositories": {"type": "array", "items": obj({
                "repository": STR, "bytes_freed": INT, "kept": {"type": "array", "items": ref("Decision")},
                "deleted": {"type": "array", "items": ref("Decision")}})}})
AUDIT = obj({"at": NUM, "actor": NULLSTR, "policy": STR, "confirmed": {"type": "boolean"},
             "summary": ref("PlanTotals"), "deleted": {"type": "array", "items": STR}})
GC_REPORT = {**REPORT, "properties": {**REPORT["properties"],
    "grace": obj({"seconds": NUM, "from": {"enum": ["gc_delay", "--grace"]}}),
    "waiting": {"type": "object", "additionalProperties": obj({"entries": INT, "first_due_in_seconds": NUM}),
                "description": "per queue: entries still in their grace period, and when the first is due"}}}
FSCK = obj({"delete": {"type": "boolean"}, "scanned_objects": INT, "scanned_rows": INT, "leaks": INT,
            "leaked_bytes": INT, "deleted": INT, "young": INT, "missing": {"type": "array", "items": STR},
            "corrupt": {"type": "array", "items": STR}, "leak_keys": {"type": "array", "items": STR},
            "requeue": {"type": "boolean"}, "unreviewed": {"type": "object", "additionalProperties": INT},
            "unreviewed_items": {"type": "array", "items": {"type": "object"}}, "requeued": INT,
            "duration": NUM}, required=["leaks", "leaked_bytes", "missing", "corrupt"], extra=True)
MIRROR = obj({"name": STR, "prefix": STR, "url": STR, "images": INT, "bytes": INT, "reachable": {"type": "boolean"},
              "last_error": STR, "last_contact": NUM}, required=["name", "prefix", "url", "images", "bytes"])
MIRRORS = obj({"mirrors": {"type": "array", "items": ref("Mirror")}, "max_size": INT, "bytes": INT})
EVICTION = obj({"dry_run": {"type": "boolean"}, "evicted": INT, "bytes": INT,
                "images": {"type": "array", "items": obj({"repository": STR, "digest": DIGEST, "bytes": INT})},
                "total_before": {"type": ["integer", "null"]}, "max_size": INT},
               required=["dry_run", "evicted", "bytes", "images"])
REPO_DELETED = obj({"name": STR, "manifests": INT, "tags": INT})
ERROR = obj({"errors": {"type": "array", "minItems": 1, "items": obj({
    "code": STR, "message": STR, "detail": {}}, required=["code", "message"])}})

SCHEMAS = {"KindReport": KIND, "Totals": TOTALS, "Report": REPORT, "Run": RUN, "Queue": QUEUE, "Waiting": WAITING,
           "GcStatus": GC_STATUS, "TrashedImage": TRASHED_IMAGE, "TrashedTag": TRASHED_TAG, "Trash": TRASH,
           "RestoreResult": RESTORE, "PurgeResult": PURGE, "Policy": POLICY, "Decision": DECISION,
           "PlanTotals": PLAN_TOTALS, "PrunePlan": PLAN, "PruneAuditEntry": AUDIT,
           "RepositoryDeleted": REPO_DELETED, "Error": ERROR, "GcReport": GC_REPORT, "FsckReport": FSCK,
           "Mirror": MIRROR, "Mirrors": MIRRORS, "Eviction": EVICTION}


def q(name: str, schema: dict, description: str, required: bool = False) -> dict:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def path(name: str, description: str, pattern: str | None = None) -> dict:
    schema = {"type": "string", "minLength": 1, **({"pattern": pattern} if pattern else {})}
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


BOOL = {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no"]}
DRY_RUN = q("dry_run", BOOL, "report what would be done; change nothing")
REFERENCE = q("reference", {"type": "string", "minLength": 1}, "REPOSITORY@DIGEST or REPOSITORY:TAG", True)
REPO_NAME = "^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"


def ok(schema: dict, description: str = "success", status: str = "200") -> dict:
    return {status: {"description": description, "content": {"application/json": {"schema": schema}}}}


def errors(*statuses: int) -> dict:
    text = {400: "invalid input (OCI error code in the body)", 401: "authentication required",
            403: "the caller's role is below x-required-role", 404: "no such object", 405: "unsupported",
            409: "conflicts with the state of another object", 429: "too many failed logins",
            503: "the database is unavailable; retry after Retry-After"}
    out = {}
    for s in sorted({401, 403, 429, 503, *statuses}):
        out[str(s)] = {"description": text[s], "content": {"application/json": {"schema": ref("Error")}}}
    return out


def op(role: str, summary: str, responses: dict, params: list | None = None, body: dict | None = None,
       tag: str = "lifecycle") -> dict:
    out = {"summary": summary, "tags": [tag], "x-required-role": role, "security": [{"basic": []}, {"bearer": []}],
           "parameters": params or [], "responses": responses}
    if body:
        out["requestBody"] = body
    return out


PATHS = {
    "/admin/v1/openapi.json": {"get": op("pull", "This document", {
        "200": {"description": "the OpenAPI document", "content": {"application/json": {"schema": {"type": "object"}}}},
        **errors()}, tag="meta")},
    "/admin/v1/repositories/{name}": {"delete": op(
        "admin", "Delete a repository: its tags go to history, its images to the trash (restorable)",
        {**ok(ref("RepositoryDeleted"), "accepted: the data goes through the reclamation pipeline", "202"),
         **errors(400, 404)}, [path("name", "repository name (may contain /)", REPO_NAME)], tag="repositories")},
    "/admin/v1/gc": {
        "get": op("admin", "Backlog of every review queue and the last collections", {
            **ok(ref("GcStatus")), **errors()}),
        "post": op("admin", "Run a collection now", {**ok(ref("GcReport")), **errors(400)}, [
            DRY_RUN, q("grace", STR, "a shorter grace than gc_delay for this run (at least 5m, with a unit: 10m); "
                                     "for a full disk")])},
    "/admin/v1/fsck": {"post": op("admin", "Reconcile storage with the database: a report only (nothing is "
                                           "deleted or re-queued)", {**ok(ref("FsckReport")), **errors(400)},
                                  [q("verify", BOOL, "re-hash every blob and report corrupt ones")])},
    "/admin/v1/mirrors": {"get": op("admin", "Each pull-through mirror: upstream, state, images and bytes mirrored", {
        **ok(ref("Mirrors")), **errors(404)}, tag="mirror")},
    "/admin/v1/mirrors/evict": {"post": op("admin", "Evict one mirrored image (fetched again on its next pull)", {
        **ok(ref("Eviction")), **errors(400, 404)}, [REFERENCE, DRY_RUN], tag="mirror")},
    "/admin/v1/mirrors/prune": {"post": op("admin", "Evict least recently pulled mirrored images down to "
                                                    "mirror_max_size", {**ok(ref("Eviction")), **errors(400, 404)},
                                           [DRY_RUN], tag="mirror")},
    "/admin/v1/scrub": {"post": op("admin", "Purge due trashed images and collect their data now",
                                   {**ok(ref("Report")), **errors(400)}, [DRY_RUN])},
    "/admin/v1/trash": {"get": op("admin", "Deleted images and tags that can still be restored", {
        **ok(ref("Trash")), **errors(400)}, [
        q("repository", STR, "repository name or glob (team/*)"),
        q("limit", {"type": "string", "pattern": "^[0-9]+$"}, "most entries per list (at most 10,000)")], tag="trash")},
    "/admin/v1/trash/restore": {"post": op("admin", "Restore a deleted image (and its tags) or a deleted tag", {
        **ok(ref("RestoreResult")), **errors(400, 404)}, [REFERENCE], tag="trash")},
    "/admin/v1/trash/purge": {"post": op("admin", "Purge one trashed image now (its data goes with the next "
                                                  "collection after gc_delay)", {
        **ok(ref("PurgeResult")), **errors(400, 404, 405, 409)}, [REFERENCE, DRY_RUN], tag="trash")},
    "/admin/v1/policies": {"get": op("admin", "Retention policies in force (configured and declared here)", {
        **ok({"type": "object", "additionalProperties": ref("Policy")}), **errors()}, tag="retention")},
    "/admin/v1/policies/{policy}": {
        "put": op("admin", "Declare or replace a retention policy", {
            **ok(ref("Policy"), "stored", "201"), **errors(400)}, [path("policy", "policy name")],
            {"required": True, "content": {"application/json": {"schema": ref("Policy")}}}, tag="retention"),
        "delete": op("admin", "Delete a policy declared through this API", {
            "204": {"description": "deleted"}, **errors(404)}, [path("policy", "policy name")], tag="retention")},
    "/admin/v1/prune": {"post": op("admin", "Preview (default) or run a retention policy", {
        **ok(ref("PrunePlan")), **errors(400, 404)}, [
        q("policy", STR, "policy name", True), q("confirm", BOOL, "delete (default: preview only)"),
        q("repository", STR, "limit to one repository or glob"),
        q("ignore_invalid_refs", BOOL, "prune even if some in-use references do not parse")],
        {"required": False, "description": "in-use references: kubectl JSON, or one reference per line",
         "content": {"text/plain": {"schema": STR}, "application/json": {"schema": {}}}}, tag="retention")},
    "/admin/v1/prune/audit": {"get": op("admin", "The audit trail of prune runs (newest first)", {
        **ok({"type": "array", "items": ref("PruneAuditEntry")}), **errors()}, tag="retention")},
}


def document() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "dockyard admin API", "version": __version__,
                 "description": "Every admin endpoint of the registry. `x-required-role` is the role the "
                                "caller needs (pull < push < admin); errors use the OCI error envelope."},
        "paths": PATHS,
        "components": {"schemas": SCHEMAS, "securitySchemes": {
            "basic": {"type": "http", "scheme": "basic"},
            "bearer": {"type": "http", "scheme": "bearer", "description": "a token from /auth/token"}}},
    }


@requires("pull")
async def openapi_json(request: Request) -> Response:
    """``GET /admin/v1/openapi.json``: this document."""
    return JSONResponse(document())
