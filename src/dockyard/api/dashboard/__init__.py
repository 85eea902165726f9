"""The web dashboard of ``dockyard serve`` (``/dashboard/``, admin role): storage over time,
repositories by usage, what can be reclaimed, the history of runs and deletes, the admin API.

Pages are rendered on the server from Jinja2 templates and one stylesheet shipped in this
package (``templates/``, ``static/``); nothing is loaded from elsewhere at run time."""

from __future__ import annotations

from pathlib import Path

from starlette.responses import RedirectResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from dockyard.api.dashboard import actions, views


def routes() -> list[BaseRoute]:
    return [Route("/dashboard", lambda request: RedirectResponse("/dashboard/", status_code=308)),
            Mount("/dashboard", routes=[
        Route("/", views.overview, methods=["GET"]),
        Route("/repositories", views.repositories, methods=["GET"]),
        Route("/r/{name:path}", views.repository, methods=["GET"]),
        Route("/reclaimable", views.reclaimable, methods=["GET"]),
        Route("/policies/{policy}", views.preview, methods=["GET"]),
        Route("/history", views.history, methods=["GET"]),
        Route("/hosts", views.hosts, methods=["GET"]),
        Route("/cache", views.cache, methods=["GET"]),
        Route("/api", views.api_docs, methods=["GET"]),
        Route("/trash/confirm", views.confirm, methods=["GET"]),
        Route("/trash/restore", actions.restore, methods=["POST"]),
        Route("/trash/purge", actions.purge, methods=["POST"]),
        Route("/login", actions.login_form, methods=["GET"]),
        Route("/login", actions.login, methods=["POST"]),
        Route("/logout", actions.logout, methods=["POST"]),
        Mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="dashboard-static"),
    ])]
