"""The dashboard's pages (GET): overview, repositories, one repository, reclaimable, history, API."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from dockyard.api.common import registry, run
from dockyard.api.dashboard.plot import usage_svg
from dockyard.api.dashboard.render import number, page, render
from dockyard.api.openapi import document
from dockyard.cache.jobs import HEARTBEAT, advertise_address, replica_stats
from dockyard.errors import RegistryError
from dockyard.hosts import service as hosts_service
from dockyard.lifecycle import rules, scheduler, trash
from dockyard.lifecycle.prune import Pruner
from dockyard.meta.browse import BrowseStore
from dockyard.meta.events import EventStore
from dockyard.meta.replicas import ReplicaStore
from dockyard.meta.retention import RetentionStore
from dockyard.meta.usage import SORTS, UsageStore

PAGE = 25
RANGES = {"1d": 86400, "7d": 7 * 86400, "30d": 30 * 86400, "1y": 365 * 86400}


def _overview(reg, span: float) -> dict:
    now = reg.now()
    with reg.db.read() as conn:
        usage = UsageStore(conn)
        blobs, stored = usage.stored()
        return {"blobs": blobs, "stored": stored, "latest": usage.latest(), "samples": usage.samples(now - span),
                "now": now}


@page
async def overview(request: Request) -> Response:
    span_name = request.query_params.get("range", "7d")
    span = RANGES.get(span_name, RANGES["7d"])
    data = await run(_overview, registry(request), span)
    return render(request, "overview.html", nav="overview", plot=usage_svg(data["samples"], data["now"] - span,
                                                                          data["now"]),
                  ranges=list(RANGES), range=span_name if span_name in RANGES else "7d", **data)


def _repositories(reg, search: str, sort: str, descending: bool, offset: int) -> tuple:
    with reg.db.read() as conn:
        return UsageStore(conn).repository_page(search, sort, descending, offset, PAGE)


@page
async def repositories(request: Request) -> Response:
    search = request.query_params.get("q", "")[:255]
    sort = request.query_params.get("sort", "name")
    sort = sort if sort in SORTS else "name"
    descending = request.query_params.get("dir", "desc" if sort != "name" else "asc") == "desc"
    pageno = max(1, number(request, "page", 1, 10**6))
    total, rows = await run(_repositories, registry(request), search, sort, descending, (pageno - 1) * PAGE)
    return render(request, "repositories.html", nav="repositories", rows=rows, total=total, q=search, sort=sort,
                  descending=descending, pageno=pageno, pages=max(1, -(-total // PAGE)))


def _repository(reg, name: str, offset: int) -> dict:
    with reg.db.read() as conn:
        browse = BrowseStore(conn)
        repo = browse.repository(name)
        if repo is None:
            raise RegistryError("NAME_UNKNOWN", "repository not known to registry", {"name": name})
        usage = UsageStore(conn)
        images_total, images = browse.images(repo.id, offset, PAGE)
        tags_total, tags = browse.tags(repo.id, 200)
        return {"repo": repo, "usage": usage.usage_of([repo.id])[repo.id], "exclusive": usage.exclusive_bytes(repo.id),
                "images": images, "images_total": images_total, "tags": tags, "tags_total": tags_total,
                "history": browse.tag_history(repo.id, 50), "referrers": browse.referrers(repo.id, 50)}


@page
async def repository(request: Request) -> Response:
    pageno = max(1, number(request, "page", 1, 10**6))
    data = await run(_repository, registry(request), request.path_params["name"], (pageno - 1) * PAGE)
    return render(request, "repository.html", nav="repositories", pageno=pageno,
                  pages=max(1, -(-data["images_total"] // PAGE)), **data)


def _reclaimable(reg) -> dict:
    status = scheduler.gc_status(reg, runs=1)
    return {"now": reg.now(), "backlog": status["backlog"], "waiting": status["waiting"],
            "trash": trash.listing(reg, None, 100),
            "policies": sorted(rules.policies(reg).items())}


@page
async def reclaimable(request: Request) -> Response:
    data = await run(_reclaimable, registry(request))
    return render(request, "reclaimable.html", nav="reclaimable", **data)


PREVIEW_PAGE = 10  # repositories planned per preview page (about 0.5 s at 100 images each)


def _preview(reg, name: str, search: str, offset: int):
    found = rules.policies(reg)
    if name not in found:
        raise RegistryError("NAME_UNKNOWN", "no such policy", {"policy": name}, status=404)
    with reg.db.read() as conn:
        total, repos = UsageStore(conn).repository_page(search, "name", False, offset, PREVIEW_PAGE, figures=False)
    among = [r.name for r in repos]
    plan = Pruner(reg, found[name], confirm=False, actor="dashboard preview", among=among).run()
    return found[name], plan, total, among


@page
async def preview(request: Request) -> Response:
    """A dry run of the policy over one page of repositories (by name, ``?q=`` to search):
    bounded work whatever the size of the registry."""
    search = request.query_params.get("q", "")[:255]
    pageno = max(1, number(request, "page", 1, 10**6))
    policy, plan, total, among = await run(_preview, registry(request), request.path_params["policy"], search,
                                           (pageno - 1) * PREVIEW_PAGE)
    return render(request, "preview.html", nav="reclaimable", policy=policy, doc=policy.to_doc(), plan=plan,
                  q=search, total=total, among=among, pageno=pageno, pages=max(1, -(-total // PREVIEW_PAGE)))


AUDITED = ("delete", "restore", "purge")


def change_of(event) -> str:
    """What a delete, restore or purge event changed, in a few words (from its payload)."""
    p = event.payload
    if p.get("scope") == "repository":
        return f"the repository ({p.get('manifests', 0)} images, {p.get('tags', 0)} tags)"
    if "tag" in p and "digest" in p and event.kind == "delete":
        return f"tag {p['tag']} ({p['digest'][:19]})"
    if "blob" in p:
        return f"layer link {p['blob'][:19]}"
    if "digests" in p:
        return f"{len(p['digests'])} images by policy {p.get('policy', '?')}"
    if "images" in p:
        return f"{len(p['images'])} images past their scrub time"
    what = p.get("reference") or p.get("digest", "")
    tags = p.get("tags") or p.get("restored_tags") or []
    return f"{what[:90]}" + (f" (tags {', '.join(tags)})" if tags else "") + (
        f", {p['bytes']} bytes" if p.get("bytes") else "")


def _history(reg) -> dict:
    with reg.db.read() as conn:
        prunes, deletes = RetentionStore(conn).audit_log(20), BrowseStore(conn).deletes(50)
        audit = EventStore(conn).recent(50, kind=AUDITED)
    return {"gc": scheduler.recent_runs(reg, "gc", 20), "scrub": scheduler.recent_runs(reg, "scrub", 20),
            "prunes": prunes, "deletes": deletes, "audit": [(e, change_of(e)) for e in audit]}


@page
async def history(request: Request) -> Response:
    data = await run(_history, registry(request))
    return render(request, "history.html", nav="history", **data)


@page
async def confirm(request: Request) -> Response:
    """The confirmation step of a restore or a purge (a purge shows what it frees: a dry run)."""
    action = request.query_params.get("action", "")
    reference = request.query_params.get("reference", "")[:600]
    if action not in ("restore", "purge") or not reference:
        raise RegistryError("UNSUPPORTED", "action must be restore or purge, with a reference", status=400)
    dry = await run(trash.purge, registry(request), reference, dry_run=True) if action == "purge" else None
    return render(request, "confirm.html", nav="reclaimable", action=action, reference=reference, dry=dry)


@page
async def api_docs(request: Request) -> Response:
    doc = document()
    return render(request, "api.html", nav="api", doc=doc, schemas=doc["components"]["schemas"])


@page
async def hosts(request: Request) -> Response:
    """Compute hosts running ``dockyard agent``: state, last seen, images held, and one host's
    images (managed or not, containers using them, deletes pending or failed) when asked."""
    reg = registry(request)
    chosen = request.query_params.get("host")
    listing = await run(hosts_service.list_hosts, reg)
    detail = await run(hosts_service.host_images, reg, chosen) if chosen else None
    return render(request, "hosts.html", nav="hosts", hosts=listing, detail=detail, now=reg.now())


def _cache(reg) -> dict:
    """Every replica with a blob cache: its figures as of its last heartbeat; this replica's
    read now. Hit ratio = hits / (hits + misses)."""
    with reg.db.read() as conn:
        rows = {r.address: {"address": r.address, "seen_at": r.seen_at, **r.stats}
                for r in ReplicaStore(conn).replicas(reg.now() - 4 * HEARTBEAT)}
    if reg.cache is not None:
        me = advertise_address(reg.config)
        rows[me] = {"address": me, "seen_at": reg.now(), "this": True, **replica_stats(reg)}
    for r in rows.values():
        asked = r.get("hits", 0) + r.get("misses", 0)
        r["hit_ratio"] = r.get("hits", 0) / asked if asked else None
    return {"replicas": sorted(rows.values(), key=lambda r: r["address"])}


@page
async def cache(request: Request) -> Response:
    return render(request, "cache.html", nav="cache", **await run(_cache, registry(request)))
