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
from dockyard.events import KINDS as EVENT_KINDS

S = "#/components/schemas/"


def ref(name: str) -> dict:
    return {"$ref": S + name}


INT = {"type": "integer", "minimum": 0}
NUM = {"type": "number"}
STR = {"type": "string"}
NULLSTR = {"type": ["string", "null"]}
NULLNUM = {"type": ["number", "null"]}
BOOLEAN = {"type": "boolean"}
STRS = {"type": "array", "items": STR}
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
REPO_DELETED = obj({"name": STR, "manifests": INT, "tags": INT, "hosts_holding": {
    **STRS, "description": "hosts whose last inventory still holds an image of the repository (never deleted by this)"}})
ERROR = obj({"errors": {"type": "array", "minItems": 1, "items": obj({
    "code": STR, "message": STR, "detail": {}}, required=["code", "message"])}})


# ---- events (api/events.py, api/webhooks.listing) ----------------------------------------
DELIVERY_STATE = {"enum": ["delivered", "pending", "not subscribed"]}
EVENT = obj({
    "id": INT, "at": NUM, "kind": {"enum": list(EVENT_KINDS)},
    "repository": {"type": ["string", "null"],
                   "description": "the repository (null: registry-wide, e.g. gc, prune)"},
    "actor": NULLSTR,
    "deliveries": {"type": "object", "additionalProperties": DELIVERY_STATE,
                   "description": "per configured endpoint"}},
    extra=True)
EVENT["description"] = "an event: these fields, and its kind's own (push: digest, tag, media_type, size; ...)"
ENDPOINT_STATE = obj({"url": STR, "events": {"type": "array", "items": {"enum": list(EVENT_KINDS)}},
                      "delivered": INT, "dropped": INT, "attempts": INT, "next_attempt_at": NUM,
                      "last_error": NULLSTR, "last_delivered_at": NULLNUM},
                     required=["url", "events", "delivered", "dropped"])
ENDPOINT_STATE["description"] = "a notification endpoint; attempts and later fields once its deliverer has run"
EVENTS = obj({"events": {"type": "array", "items": ref("Event"), "description": "newest first"},
              "outbox": {**INT, "description": "events in the outbox"},
              "endpoints": {"type": "object", "additionalProperties": ref("EndpointState")}})

# ---- quotas (api/quotas.py, lifecycle/quotas.py) ------------------------------------------
SOFT = {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "description": "fraction of hard (default 0.8)"}
QUOTA = obj({"repositories": STR, "hard": {**INT, "description": "bytes"}, "soft": SOFT,
             "usage": {"type": ["integer", "null"], "minimum": 0,
                       "description": "bytes, as recorded (null: not counted yet for this glob)"},
             "configured": {**BOOLEAN, "description": "declared in the configuration file (read-only here)"}})
QUOTA_STORED = obj({"repositories": STR, "hard": INT, "soft": SOFT,
                    "usage": {**INT, "description": "bytes, counted when stored"},
                    "configured": {"const": False, "description": "stored through this API, not the file"}})
QUOTA_BODY = obj({
    "repositories": {"type": "string", "minLength": 1, "maxLength": 255,
                     "description": "repository glob (* any run of characters, / included; ? one; no [..])"},
    "hard": {"type": ["integer", "string"], "minimum": 0, "maximum": 2**63 - 1,
             "description": "bytes, or a size with a binary unit: 10GiB (at most 2^63-1 bytes)"},
    "soft": SOFT}, required=["repositories", "hard"])

# ---- hosts (api/hosts.py, hosts/service.py) -----------------------------------------------
HOST_STATE = {"enum": ["up", "down", "revoked"],
              "description": "down: not heard from within host_down_after; revoked: removed"}
WORK_STATE = {"enum": ["pending", "failed"]}
HOST = obj({"name": STR, "state": HOST_STATE, "address": NULLSTR, "version": NULLSTR, "created_at": NUM,
            "last_seen": NULLNUM, "images": INT, "bytes": INT})
HOST_ADDED = obj({"host": STR, "token": {"type": "string", "pattern": "^dyh_",
                                         "description": "the host credential, shown once (stored hashed)"}})
WORK = obj({"id": INT, "host": STR, "kind": {"enum": ["pull", "delete"]}, "repository": STR,
            "reference": {**STR, "description": "a digest; for a pull by tag, the tag"}, "state": WORK_STATE,
            "error": NULLSTR, "created_at": NUM, "updated_at": NUM, "actor": NULLSTR})
HOST_IMAGE = obj({"host": STR, "digest": DIGEST, "repository": STR, "tag": NULLSTR, "managed": BOOLEAN,
                  "bytes": INT, "pulled_at": NULLNUM, "last_used": NULLNUM, "containers": STRS,
                  "delete": {"anyOf": [{"type": "null"}, obj({"state": WORK_STATE, "error": NULLSTR, "id": INT})],
                             "description": "the delete asked for this image, if any"}})
HOST_IMAGES = obj({"host": STR, "state": HOST_STATE, "last_seen": NULLNUM,
                   "images": {"type": "array", "items": ref("HostImage")},
                   "work": {"type": "array", "items": ref("Work")}})
INVENTORY_IMAGE = obj({"repository": STR, "digest": DIGEST, "tag": NULLSTR, "managed": BOOLEAN,
                       "bytes": {**INT, "maximum": 2**62}, "pulled_at": NULLNUM, "last_used": NULLNUM,
                       "containers": {**STRS, "maxItems": 1000}}, required=["repository", "digest"], extra=True)
INVENTORY_IMAGE["description"] = "one image a host holds (other keys are ignored)"
INVENTORY_COUNTS = obj({"images": INT, "added": INT, "updated": INT, "removed": INT})
HEARTBEAT = obj({"address": STR, "version": STR}, required=[], extra=True)
RESULTS = obj({"results": {"type": "array", "maxItems": 10_000, "items": obj({
    "id": {"type": "integer", "maximum": 2**63 - 1}, "ok": BOOLEAN, "error": NULLSTR,
    "image": {"anyOf": [{"type": "null"}, ref("InventoryImage")],
              "description": "ok pull: the image now held"}}, required=["id"], extra=True)}}, extra=True)
CONFIRMED = obj({"done": INT, "failed": INT})
WORK_QUEUED = obj({"host": STR, "kind": {"enum": ["pull", "delete"]}, "repository": STR, "reference": STR,
                   "dry_run": BOOLEAN, "bytes": {**INT, "description": "a delete: the bytes the host frees"},
                   "queued_at": NUM, "id": INT, "state": {"const": "pending"}},
                  required=["host", "kind", "repository", "reference", "dry_run", "bytes"])
WORK_QUEUED["description"] = "queued_at, id and state: not in a dry run"
IMAGE_DELETED = obj({"reference": STR, "repository": STR, "digest": DIGEST, "deleted": BOOLEAN, "what": STR,
                     "dry_run": BOOLEAN, "hosts_holding": {
                         **STRS, "description": "hosts that still hold the image (never deleted by this)"}})

# ---- the blob cache (api/cache.py, cache/maintenance.py): per replica, fanned out ---------
CACHE_ENTRY = obj({"digest": DIGEST, "size": INT, "state": {"enum": ["filling", "ready", "evicting"]}, "hits": INT,
                   "last_accessed": NUM, "created": NUM, "pinned": BOOLEAN, "in_use": BOOLEAN})
QUEUED_PREFETCH = obj({"id": INT, "target": STR, "pin": BOOLEAN, "queued": NUM, "attempts": INT, "not_before": NUM,
                       "owner": {"type": ["integer", "null"]}, "last_error": NULLSTR})
CACHE_LISTING = obj({"entries": {"type": "array", "items": ref("CacheEntry")}, "total_entries": INT,
                     "total_bytes": INT, "max_size": INT, "high_watermark": {**INT, "description": "bytes"},
                     "low_watermark": {**INT, "description": "bytes"},
                     "queued": {"type": "array", "items": ref("QueuedPrefetch")}, "queue_length": INT})
CACHE_CLEARED = obj({"total_files_deleted": INT, "total_bytes_deleted": INT, "skipped_in_use": INT,
                     "prefetches_removed": INT, "dry_run": BOOLEAN})
CACHE_CLEANED = obj({"total_files_cleaned": INT, "total_bytes_cleaned": INT, "invalid": INT, "incomplete": INT,
                     "unknown_files": INT, "missing_files": INT, "stale_reads": INT, "dry_run": BOOLEAN,
                     "items": {"type": "array", "maxItems": 100, "items": obj({
                         "kind": {"enum": ["invalid", "incomplete", "unknown_files", "missing_files"]},
                         "what": STR, "bytes": INT})}})
CACHE_PRUNED = obj({"total_files_pruned": INT, "total_bytes_pruned": INT, "size_before": INT, "size_after": INT,
                    "low_watermark": INT, "dry_run": BOOLEAN})
CACHE_DELETED = obj({"total_files_deleted": INT, "total_bytes_deleted": INT, "dry_run": BOOLEAN,
                     "cached": {"const": False, "description": "present when the blob was not in the cache"}},
                    required=["total_files_deleted", "total_bytes_deleted", "dry_run"])
PREFETCH_QUEUED = obj({"queued": ref("QueuedPrefetch"), "new": {**BOOLEAN, "description": "false: queued already"}})
CACHE_DISABLED = obj({"enabled": {"const": False}})
CACHE_DISABLED["description"] = "a replica without a blob cache (storage is not s3, or cache_max_size = 0)"
REPLICA_ERROR = obj({"error": STR, "detail": {}}, required=["error"])
REPLICA_ERROR["description"] = "a replica that did not answer, or answered an error (its HTTP status and body)"


def cache_answer(local: str, totals: tuple[str, ...]) -> dict:
    """A cache call's answer: with scope=local this replica's own (or CacheDisabled); else the
    totals summed over every live replica and each one's answer, by address."""
    one = {"anyOf": [ref(local), ref("CacheDisabled"), ref("ReplicaError")]}
    fanned = obj({**{t: INT for t in totals}, "replicas": {"type": "object", "additionalProperties": one},
                  "failed_replicas": {**STRS, "description": "addresses that answered an error or nothing"}})
    return {"anyOf": [fanned, ref(local), ref("CacheDisabled")]}


SCHEMAS = {"KindReport": KIND, "Totals": TOTALS, "Report": REPORT, "Run": RUN, "Queue": QUEUE, "Waiting": WAITING,
           "GcStatus": GC_STATUS, "TrashedImage": TRASHED_IMAGE, "TrashedTag": TRASHED_TAG, "Trash": TRASH,
           "RestoreResult": RESTORE, "PurgeResult": PURGE, "Policy": POLICY, "Decision": DECISION,
           "PlanTotals": PLAN_TOTALS, "PrunePlan": PLAN, "PruneAuditEntry": AUDIT,
           "RepositoryDeleted": REPO_DELETED, "Error": ERROR, "GcReport": GC_REPORT, "FsckReport": FSCK,
           "Mirror": MIRROR, "Mirrors": MIRRORS, "Eviction": EVICTION,
           "Event": EVENT, "EndpointState": ENDPOINT_STATE, "Events": EVENTS,
           "Quota": QUOTA, "QuotaStored": QUOTA_STORED, "QuotaBody": QUOTA_BODY,
           "Host": HOST, "HostAdded": HOST_ADDED, "Work": WORK, "HostImage": HOST_IMAGE, "HostImages": HOST_IMAGES,
           "InventoryImage": INVENTORY_IMAGE, "InventoryCounts": INVENTORY_COUNTS, "Heartbeat": HEARTBEAT,
           "WorkResults": RESULTS, "WorkConfirmed": CONFIRMED, "WorkQueued": WORK_QUEUED,
           "ImageDeleted": IMAGE_DELETED,
           "CacheEntry": CACHE_ENTRY, "QueuedPrefetch": QUEUED_PREFETCH, "CacheListing": CACHE_LISTING,
           "CacheCleared": CACHE_CLEARED, "CacheCleaned": CACHE_CLEANED, "CachePruned": CACHE_PRUNED,
           "CacheDeleted": CACHE_DELETED, "PrefetchQueued": PREFETCH_QUEUED, "CacheDisabled": CACHE_DISABLED,
           "ReplicaError": REPLICA_ERROR}


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


def errors(*statuses: int, notes: dict[int, str] | None = None) -> dict:
    text = {400: "invalid input (OCI error code in the body)", 401: "authentication required",
            403: "the caller's role is below x-required-role", 404: "no such object", 405: "unsupported",
            409: "conflicts with the state of another object", 429: "too many failed logins",
            503: "the database is unavailable; retry after Retry-After"}
    out = {}
    for s in sorted({401, 403, 429, 503, *statuses}):
        out[str(s)] = {"description": text[s] + ("; " + notes[s] if notes and s in notes else ""), "content": {"application/json": {"schema": ref("Error")}}}
    return out


def op(role: str, summary: str, responses: dict, params: list | None = None, body: dict | None = None,
       tag: str = "lifecycle", host_credential: bool = False) -> dict:
    """``host_credential``: the route is guarded not by ``@requires`` but by ``api/hosts.host_call``:
    an admin, or the host named in the path with its own credential (another host's: 403)."""
    out = {"summary": summary, "tags": [tag], "x-required-role": role, "security": [{"basic": []}, {"bearer": []}],
           "parameters": params or [], "responses": responses}
    if host_credential:
        out["summary"] += " (admin, or this host's own credential)"
        out["x-host-credential"] = True
        out["security"] = [*out["security"], {"host": []}]
        out["responses"]["403"] = {**out["responses"]["403"], "description": "the caller is neither an admin nor "
                                   "this host (a host credential is good for its own host only)"}
    if body:
        out["requestBody"] = body
    return out


HOST_PATH = path("host", "host name (letters, digits, . _ -; at most 63)", r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
QUOTA_PATH = path("quota", "quota name (1 to 128 characters)", r"^[^/]{1,128}$")
POLICY_PATH = path("policy", "policy name", "^[^/]+$")
SCOPE = q("scope", {"enum": ["local"]}, "this replica only (what the fan-out sends each replica); "
                                         "default: every live replica")
LIMIT = q("limit", {"type": "string", "pattern": "^[0-9]+$"}, "most entries (at most 10,000)")


def json_body(schema: dict, required: bool = True, description: str | None = None) -> dict:
    out = {"required": required, "content": {"application/json": {"schema": schema}}}
    return {**out, "description": description} if description else out


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
            **ok(ref("GcStatus")), **errors(400)}, [
            q("runs", {"type": "string", "pattern": "^[0-9]+$"}, "how many of the last runs (default 10, at most 500)")]),
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
            **ok(ref("Policy"), "stored", "201"), **errors(400)}, [POLICY_PATH],
            {"required": True, "content": {"application/json": {"schema": ref("Policy")}}}, tag="retention"),
        "delete": op("admin", "Delete a policy declared through this API", {
            "204": {"description": "deleted"}, **errors(404)}, [POLICY_PATH], tag="retention")},
    "/admin/v1/prune": {"post": op("admin", "Preview (default) or run a retention policy", {
        **ok(ref("PrunePlan")), **errors(400, 404)}, [
        q("policy", STR, "policy name", True), q("confirm", BOOL, "delete (default: preview only)"),
        q("repository", STR, "limit to one repository or glob"),
        q("ignore_invalid_refs", BOOL, "prune even if some in-use references do not parse")],
        {"required": False, "description": "in-use references: kubectl JSON, or one reference per line",
         "content": {"text/plain": {"schema": STR}, "application/json": {"schema": {}}}}, tag="retention")},
    "/admin/v1/prune/audit": {"get": op("admin", "The audit trail of prune runs (newest first)", {
        **ok({"type": "array", "items": ref("PruneAuditEntry")}), **errors()}, tag="retention")},
    "/admin/v1/events": {"get": op("admin", "Recent events (newest first), each with its delivery state per "
                                            "endpoint, and every endpoint's state", {
        **ok(ref("Events")), **errors(400)}, [
        LIMIT, q("kind", {"enum": list(EVENT_KINDS)}, "only events of this kind (another value: 400)"),
        q("repository", STR, "only events of this repository (exact name)")], tag="events")},
    "/admin/v1/quotas": {"get": op("admin", "Every quota in force (configured and declared here) with its usage", {
        **ok({"type": "object", "additionalProperties": ref("Quota")}), **errors()}, tag="quotas")},
    "/admin/v1/quotas/{quota}": {
        "get": op("admin", "One quota with its usage", {**ok(ref("Quota")), **errors(404)}, [QUOTA_PATH],
                  tag="quotas"),
        "put": op("admin", "Declare or replace a quota; its usage is counted at once", {
            **ok(ref("QuotaStored"), "stored", "201"),
            **errors(400, notes={403: "or the name is a quota of the configuration file"})},
            [QUOTA_PATH], json_body(ref("QuotaBody")), tag="quotas"),
        "delete": op("admin", "Delete a quota declared through this API", {
            "204": {"description": "deleted"},
            **errors(404, notes={404: "a configured quota cannot be deleted here"})}, [QUOTA_PATH], tag="quotas")},
    "/admin/v1/hosts": {"get": op("admin", "Hosts running dockyard agent: state, images and bytes held", {
        **ok(obj({"hosts": {"type": "array", "items": ref("Host")}})), **errors()}, tag="hosts")},
    "/admin/v1/hosts/{host}": {
        "post": op("admin", "Add a host (or re-add a removed one): answers its credential, once", {
            **ok(ref("HostAdded"), "added", "201"), **errors(400, 409)}, [HOST_PATH], tag="hosts"),
        "delete": op("admin", "Remove a host: its credential is revoked (what it holds stays accounted for)", {
            "204": {"description": "revoked"}, **errors(400, 404)}, [HOST_PATH], tag="hosts")},
    "/admin/v1/hosts/{host}/images": {"get": op(
        "admin", "The host's images (its last inventory) with any delete asked for each, and its work", {
            **ok(ref("HostImages")), **errors(400, 404)}, [HOST_PATH], tag="hosts", host_credential=True)},
    "/admin/v1/hosts/{host}/heartbeat": {"post": op("admin", "The host is alive (and its address and version)", {
        "204": {"description": "recorded"}, **errors(400, 404)}, [HOST_PATH],
        json_body(ref("Heartbeat"), False, "empty: {}; values that are not strings are ignored"),
        tag="hosts", host_credential=True)},
    "/admin/v1/hosts/{host}/inventory": {"put": op("admin", "Replace the host's inventory: every image it holds", {
        **ok(ref("InventoryCounts")), **errors(400, 404)}, [HOST_PATH],
        {"required": False, "description": "one InventoryImage JSON object per line (NDJSON; at most 256 MiB)",
         "content": {"application/x-ndjson": {"schema": {**STR, "x-line-schema": ref("InventoryImage")}}}},
        tag="hosts", host_credential=True)},
    "/admin/v1/hosts/{host}/work": {
        "get": op("admin", "The host's pending work; with wait, a long poll that answers as soon as there is some", {
            **ok(obj({"work": {"type": "array", "items": ref("Work")}}),
                 "the pending work"), **errors(400, 404, notes={404: "no such host (or it was removed)"})},
            [HOST_PATH, q("wait", {"type": "number", "minimum": 0, "maximum": 30},
                          "seconds to wait for work (default 0; more than 30 counts as 30)")],
            tag="hosts", host_credential=True),
        "post": op("admin", "Queue a pull or a delete of one image on the host", {
            **ok(ref("WorkQueued"), "dry run: what would be queued"),
            **ok(ref("WorkQueued"), "queued", "202"),
            **errors(400, 404, notes={400: "kind is not pull or delete, or the reference is invalid",
                                      404: "no such host (or it was removed), or no such image (in the registry "
                                           "for a pull, on the host for a delete)"})},
            [HOST_PATH, q("kind", {"enum": ["pull", "delete"]}, "what to do", True),
             q("reference", {"type": "string", "minLength": 1},
               "REPOSITORY:TAG or REPOSITORY@DIGEST (no registry host part)", True), DRY_RUN], tag="hosts")},
    "/admin/v1/hosts/{host}/work/results": {"post": op("admin", "Confirm work: a success removes it (a delete also "
                                                                "the image's row), a failure keeps it with its error", {
        **ok(ref("WorkConfirmed"), "counts (ids of other hosts or unknown ones are skipped)"),
        **errors(400, 404, notes={404: "no such host (or it was removed)"})},
        [HOST_PATH], json_body(ref("WorkResults")), tag="hosts", host_credential=True)},
    "/admin/v1/cache": {
        "get": op("admin", "Blob cache entries and queued prefetches, on every replica", {
            **ok(cache_answer("CacheListing", ("total_entries", "total_bytes", "queue_length"))), **errors(400)},
            [SCOPE, q("limit", {"type": "string", "pattern": "^[0-9]+$"},
                      "most entries and queued prefetches listed (per replica; default 1000)")], tag="cache"),
        "delete": op("admin", "Evict every cache entry nobody reads (pinned too) and empty the prefetch queue, on "
                              "every replica", {
            **ok(cache_answer("CacheCleared", ("total_files_deleted", "total_bytes_deleted", "prefetches_removed"))),
            **errors(400)}, [SCOPE, DRY_RUN], tag="cache")},
    "/admin/v1/cache/clean": {"post": op("admin", "Remove invalid, stalled and unknown cache files, on every replica", {
        **ok(cache_answer("CacheCleaned", ("total_files_cleaned", "total_bytes_cleaned"))), **errors(400)},
        [SCOPE, DRY_RUN, q("verify", BOOL, "re-hash every entry")], tag="cache")},
    "/admin/v1/cache/prune": {"post": op("admin", "Evict least recently used cache entries down to the low "
                                                  "watermark, on every replica", {
        **ok(cache_answer("CachePruned", ("total_files_pruned", "total_bytes_pruned"))), **errors(400)},
        [SCOPE, DRY_RUN], tag="cache")},
    "/admin/v1/cache/{target}": {
        "put": op("admin", "Queue a prefetch (a blob, or every blob of an image) on every replica", {
            **ok(cache_answer("PrefetchQueued", ()), "queued", "202"), **errors(400, 405, notes={405: "no replica has a blob cache"})},
            [path("target", "a digest, REPOSITORY:TAG or REPOSITORY@DIGEST (no registry host part)"), SCOPE,
             q("pin", BOOL, "pin what it brings (never evicted by prune)")], tag="cache"),
        "delete": op("admin", "Evict one blob (pinned too) from every replica's cache", {
            **ok(cache_answer("CacheDeleted", ("total_files_deleted", "total_bytes_deleted"))),
            **errors(400, 409, notes={409: "the entry is being read or filled; try again"})},
            [path("target", "the blob's digest", DIGEST["pattern"]), SCOPE, DRY_RUN], tag="cache")},
    "/admin/v1/images": {"delete": op("admin", "Delete an image (by digest: to the trash) or a tag in the registry; "
                                               "the answer lists the hosts that still hold it", {
        **ok(ref("ImageDeleted")), **errors(400, 404)},
        [q("reference", {"type": "string", "minLength": 1}, "REPOSITORY:TAG or REPOSITORY@DIGEST", True), DRY_RUN],
        tag="hosts")},
}


def document() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "dockyard admin API", "version": __version__,
                 "description": "Every admin endpoint of the registry. `x-required-role` is the role the "
                                "caller needs (pull < push < admin); `x-host-credential`: the host named in "
                                "the path may also call it with its own credential. Errors use the OCI error "
                                "envelope."},
        "paths": PATHS,
        "components": {"schemas": SCHEMAS, "securitySchemes": {
            "basic": {"type": "http", "scheme": "basic"},
            "bearer": {"type": "http", "scheme": "bearer", "description": "a token from /auth/token"},
            "host": {"type": "http", "scheme": "bearer",
                     "description": "a host credential (dyh_..., from POST /admin/v1/hosts/{host}): on the "
                                    "operations marked x-host-credential, good for its own host only (another "
                                    "host's: 403; unknown or revoked: 401); elsewhere it has the pull role"}}},
    }


@requires("pull")
async def openapi_json(request: Request) -> Response:
    """``GET /admin/v1/openapi.json``: this document."""
    return JSONResponse(document())
