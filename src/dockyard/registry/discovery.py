"""Content discovery: tags lists, the catalog, referrers."""

from __future__ import annotations

from typing import Callable

from dockyard.meta.manifests import ManifestStore, Referrer
from dockyard.meta.repositories import RepositoryStore
from dockyard.meta.tags import TagStore
from dockyard.validate import check_digest
from dockyard.registry.context import Registry


def tags(reg: Registry, name: str, limit: int | None, last: str | None) -> list[str]:
    with reg.db.read() as conn:
        repo = RepositoryStore(conn).require(name)
        return TagStore(conn).page(repo.id, last, limit)


def catalog(reg: Registry, limit: int | None, last: str | None) -> list[str]:
    with reg.db.read() as conn:
        return RepositoryStore(conn).page(last, limit)


CATALOG_BATCH = 1000


def catalog_filtered(reg: Registry, limit: int | None, last: str | None,
                     visible: Callable[[str], bool]) -> list[str]:
    """Up to ``limit`` repository names after ``last`` for which ``visible`` holds (the caller
    may pull them): pages through the names in batches, each its own short read."""
    out: list[str] = []
    while limit is None or len(out) < limit:
        with reg.db.read() as conn:
            batch = RepositoryStore(conn).page(last, CATALOG_BATCH)
        out += [name for name in batch if visible(name)]
        if len(batch) < CATALOG_BATCH:
            break
        last = batch[-1]
    return out if limit is None else out[:limit]


def referrers(reg: Registry, name: str, digest: str, artifact_type: str | None) -> list[Referrer]:
    d = str(check_digest(digest))
    with reg.db.read() as conn:
        repo = RepositoryStore(conn).get(name)
        if repo is None:
            return []
        return ManifestStore(conn).referrers(repo.id, d, artifact_type)
