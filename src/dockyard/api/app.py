"""``create_app(registry)``: the ASGI application. No globals; everything is passed in."""

from __future__ import annotations

import contextlib
import logging

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route

from dockyard.lifecycle.scheduler import scheduled_jobs
from dockyard.storage.base import StorageError
from dockyard.api import admin, base, blobs, dashboard, discovery, health, lifecycle, manifests, openapi, uploads
from dockyard.api import events, hosts, mirror, quotas, webhooks
from dockyard.api.auth import Authenticator, token_endpoint
from dockyard.api.cache import cache_routes
from dockyard.api.dispatch import App
from dockyard.api.errors import (not_found_handler, registry_error_handler, storage_error_handler,
                                 unexpected_error_handler)
from dockyard.errors import RegistryError
from dockyard.registry.context import Registry

log = logging.getLogger(__name__)

N = "/v2/{name:path}"


def routes() -> list[Route]:
    return [
        Route("/v2/", base.version_check, methods=["GET"]),
        Route("/v2/_catalog", discovery.catalog, methods=["GET"]),
        Route(N + "/tags/list", discovery.tags_list, methods=["GET"]),
        Route(N + "/referrers/{digest}", discovery.referrers, methods=["GET"]),
        Route(N + "/manifests/{reference}", manifests.get_manifest, methods=["GET", "HEAD"]),
        Route(N + "/manifests/{reference}", manifests.put_manifest, methods=["PUT"]),
        Route(N + "/manifests/{reference}", manifests.delete_manifest, methods=["DELETE"]),
        Route(N + "/blobs/uploads/", uploads.start_upload, methods=["POST"]),
        Route(N + "/blobs/uploads", uploads.start_upload, methods=["POST"]),
        Route(N + "/blobs/uploads/{upload_id}", uploads.patch_upload, methods=["PATCH"]),
        Route(N + "/blobs/uploads/{upload_id}", uploads.put_upload, methods=["PUT"]),
        Route(N + "/blobs/uploads/{upload_id}", uploads.upload_status, methods=["GET"]),
        Route(N + "/blobs/uploads/{upload_id}", uploads.cancel_upload, methods=["DELETE"]),
        Route(N + "/blobs/{digest}", blobs.get_blob, methods=["GET", "HEAD"]),
        Route(N + "/blobs/{digest}", blobs.delete_blob, methods=["DELETE"]),
        Route("/auth/token", token_endpoint, methods=["GET"]),
        Route("/admin/v1/repositories/{name:path}", admin.delete_repository, methods=["DELETE"]),
        Route("/admin/v1/gc", lifecycle.start_gc, methods=["POST"]),
        Route("/admin/v1/gc", lifecycle.gc_status, methods=["GET"]),
        Route("/admin/v1/scrub", lifecycle.start_scrub, methods=["POST"]),
        Route("/admin/v1/trash", lifecycle.trash_list, methods=["GET"]),
        Route("/admin/v1/trash/restore", lifecycle.trash_restore, methods=["POST"]),
        Route("/admin/v1/trash/purge", lifecycle.trash_purge, methods=["POST"]),
        Route("/admin/v1/policies", lifecycle.list_policies, methods=["GET"]),
        Route("/admin/v1/policies/{policy}", lifecycle.put_policy, methods=["PUT"]),
        Route("/admin/v1/policies/{policy}", lifecycle.delete_policy, methods=["DELETE"]),
        Route("/admin/v1/prune", lifecycle.run_prune, methods=["POST"]),
        Route("/admin/v1/prune/audit", lifecycle.prune_audit, methods=["GET"]),
        Route("/admin/v1/fsck", lifecycle.fsck_report, methods=["POST"]),
        Route("/admin/v1/openapi.json", openapi.openapi_json, methods=["GET"]),
        Route("/metrics", lifecycle.metrics, methods=["GET"]),
        Route("/admin/v1/events", events.list_events, methods=["GET"]),
        Route("/admin/v1/quotas", quotas.list_quotas, methods=["GET"]),
        Route("/admin/v1/quotas/{quota}", quotas.get_quota, methods=["GET"]),
        Route("/admin/v1/quotas/{quota}", quotas.put_quota, methods=["PUT"]),
        Route("/admin/v1/quotas/{quota}", quotas.delete_quota, methods=["DELETE"]),
        Route("/healthz", health.healthz, methods=["GET"]),  # no credentials, even with auth
        Route("/readyz", health.readyz, methods=["GET"]),
        *mirror.routes(),
        *dashboard.routes(),
        *hosts.routes(),
        *cache_routes(Route),
    ]


def _lifespan(registry: Registry, background: bool):
    @contextlib.asynccontextmanager
    async def lifespan(app):
        runners = scheduled_jobs(registry) + webhooks.runners(registry) if background else []
        for r in runners:
            r.start()
        try:
            yield
        finally:
            for r in runners:
                r.stop()
            registry.pulls.flush(registry.db)
            db = registry.db
            log.info("database: %d write transactions in this process (%d group transactions of %d bodies); "
                     "the writer's turn held %.3f s (%.3f s of CPU)", getattr(db, "turns", 0), getattr(db, "groups", 0),
                     getattr(db, "bodies", 0), getattr(db, "turn_seconds", 0.0), getattr(db, "turn_cpu_seconds", 0.0))

    return lifespan


def create_app(registry: Registry, auth: Authenticator | None = None, *, background: bool = True) -> Starlette:
    app = App(
        lifespan=_lifespan(registry, background),
        routes=routes(),
        exception_handlers={
            RegistryError: registry_error_handler,
            StorageError: storage_error_handler,
            HTTPException: not_found_handler,
            Exception: unexpected_error_handler,
        },
    )
    app.router.redirect_slashes = False
    app.state.registry = registry
    app.state.auth = auth or Authenticator(registry.config, registry.clock.now)
    app.state.readiness = health.Readiness(registry)
    app.state.mirror = mirror.build(registry)
    return app
