"""Storage quotas in force: charged when a layer link appears, credited when one goes.

A blob counts for a quota's namespace once: when the first repository of the namespace
links it (``charge``, before the link is written) and until the last one stops linking it
(``credit``, after the links are removed: a client's DELETE of a blob, the collector
reclaiming layer links). Both run inside the transaction that changes the links and take
the quota's usage row first (``QuotaStore.lock``), so concurrent pushes into one namespace
serialise on it (PostgreSQL; SQLite has one writer anyway). A push that would take the
usage past ``hard`` is refused with DENIED and changes nothing; one that crosses the soft
threshold records a ``quota`` event. ``reconcile`` (run by ``dockyard fsck``) recounts every
quota from the links, reports drift and fixes it.
"""

from __future__ import annotations

import logging
from typing import Iterable, Mapping

from dockyard import faults
from dockyard.errors import RegistryError
from dockyard.meta.events import EventStore
from dockyard.meta.quotas import QuotaStore
from dockyard.quotas import Quota

log = logging.getLogger(__name__)


def in_force(conn, configured: Mapping[str, Quota]) -> dict[str, Quota]:
    """The configuration file's quotas and those declared through the admin API (a name
    declared in the file cannot be redeclared through the API)."""
    return {**QuotaStore(conn).stored(), **configured}


def _human(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def charge(conn, reg, repo_id: int, digests: Mapping[str, int] | Iterable[str], now: float, *,
           enforce: bool = True) -> None:
    """Count ``digests`` (digest -> size, or digests whose rows give the size) about to be
    linked to the repository, for every quota whose namespace does not link them yet.
    ``enforce``: refuse (DENIED) what would exceed a hard quota; a restore is not refused."""
    store = QuotaStore(conn)
    found = in_force(conn, reg.config.quotas)
    if not found:
        return
    name = store.names_of([repo_id]).get(repo_id)
    matching = sorted((q for q in found.values() if name and q.applies_to(name)), key=lambda q: q.name)
    if not matching:
        return
    sizes = dict(digests) if isinstance(digests, Mapping) else store.sizes(digests)
    store.hold_blobs(sizes)  # lock order: blob rows, then quota rows (the collector's order)
    for q in matching:  # name order: one lock order for every transaction
        usage = store.lock(q, now)
        faults.point("quotas.charge_locked")  # usage row held; the namespace's links not read yet
        linked = store.linked_in_namespace(q, sizes)
        added = sum(size for d, size in sizes.items() if d not in linked)
        if not added:
            continue
        if enforce and usage + added > q.hard:
            reg.metrics.inc("dockyard_quota_denied_total", quota=q.name)
            log.info("quota %s: refused %d bytes for %s (%d of %d bytes used)", q.name, added, name, usage, q.hard)
            raise RegistryError(
                "DENIED", f"quota {q.name} ({q.repositories}) exceeded: {_human(usage)} of {_human(q.hard)} "
                f"used, this push needs {_human(added)} more",
                {"quota": q.name, "repositories": q.repositories, "usage": usage, "hard": q.hard,
                 "requested": added})
        store.add(q.name, added, now)
        if usage < q.soft_bytes <= usage + added:
            log.warning("quota %s: %s is past its soft threshold (%d of %d bytes used)", q.name, q.repositories,
                        usage + added, q.hard)
            EventStore(conn).record("quota", name, {"quota": q.name, "repositories": q.repositories,
                                                    "usage": usage + added, "hard": q.hard, "soft": q.soft}, now)


def check_room(conn, reg, repo_name: str) -> None:
    """A manifest push into a namespace already over its hard quota (lowered since) is refused."""
    found = in_force(conn, reg.config.quotas)
    if not found:
        return
    usage = QuotaStore(conn).usage()
    for q in sorted(found.values(), key=lambda q: q.name):
        used = usage.get(q.name, ("", 0))
        if q.applies_to(repo_name) and used[0] == q.repositories and used[1] > q.hard:
            reg.metrics.inc("dockyard_quota_denied_total", quota=q.name)
            raise RegistryError("DENIED", f"quota {q.name} ({q.repositories}) exceeded: {_human(used[1])} of "
                                f"{_human(q.hard)} used", {"quota": q.name, "usage": used[1], "hard": q.hard})


def credit(conn, configured: Mapping[str, Quota], pairs: Iterable[tuple[int, str]], now: float) -> None:
    """Give back, after layer links ``pairs`` (repository id, digest) were removed, the
    blobs no repository of a quota's namespace links any more."""
    pairs = list(pairs)
    found = in_force(conn, configured) if pairs else {}
    if not found:
        return
    store = QuotaStore(conn)
    names = store.names_of(r for r, _ in pairs)
    for q in sorted(found.values(), key=lambda q: q.name):
        digests = {d for r, d in pairs if q.applies_to(names.get(r, ""))}
        if not digests:
            continue
        store.lock(q, now)
        faults.point("quotas.credit_locked")
        gone = digests - store.linked_in_namespace(q, digests)
        freed = sum(store.sizes(gone).values())
        if freed:
            store.add(q.name, -freed, now)


def usage(reg) -> dict[str, dict]:
    """Every quota in force with its usage (as recorded)."""
    with reg.db.read() as conn:
        found = in_force(conn, reg.config.quotas)
        used = QuotaStore(conn).usage()
    out = {}
    for name, q in sorted(found.items()):
        glob, value = used.get(name, (q.repositories, None))
        out[name] = {**q.to_doc(), "usage": value if glob == q.repositories else None,
                     "configured": name in reg.config.quotas}
    return out


def reconcile(db, configured: Mapping[str, Quota], now: float) -> list[dict]:
    """Recount every quota from the links; report each drift and fix it."""
    drift = []
    with db.write() as conn:
        store = QuotaStore(conn)
        for q in sorted(in_force(conn, configured).values(), key=lambda q: q.name):
            recorded = store.lock(q, now)
            exact = store.exact(q)
            if exact != recorded:
                drift.append({"quota": q.name, "recorded": recorded, "exact": exact})
                log.warning("quota %s: usage was %d bytes, recounted %d; fixed", q.name, recorded, exact)
                store.set(q, exact, now)
    return drift


def store_quota(reg, q: Quota, actor: str | None) -> dict:
    with reg.db.write() as conn:
        QuotaStore(conn).put(q, reg.now(), actor)
        usage = QuotaStore(conn).lock(q, reg.now())  # counted now, under the lock
    return {**q.to_doc(), "usage": usage, "configured": False}  # the same shape as listing's entries


def delete_quota(reg, name: str) -> bool:
    with reg.db.write() as conn:
        return QuotaStore(conn).delete(name)
