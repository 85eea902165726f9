"""HostStore: hosts running ``dockyard agent``, the images they hold, their work queue."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Iterator

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update

from dockyard.meta.schema import ACTIVE as MANIFEST_ACTIVE, host_images, host_work, hosts, manifests, repositories, tags

ACTIVE = "active"
REVOKED = "revoked"
PENDING = "pending"
FAILED = "failed"
_IN_CHUNK = 500  # digests per IN (...) list
_MUTABLE = ("managed", "repository", "tag", "bytes", "pulled_at", "last_used", "containers")


@dataclass(frozen=True, slots=True)
class Host:
    name: str
    state: str
    address: str | None
    version: str | None
    created_at: float
    last_seen: float | None
    images: int = 0
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class HostImage:
    host: str
    digest: str
    repository: str
    tag: str | None
    managed: bool
    bytes: int
    pulled_at: float | None
    last_used: float | None
    containers: list[str]


@dataclass(frozen=True, slots=True)
class Work:
    id: int
    host: str
    kind: str
    repository: str
    reference: str
    state: str
    error: str | None
    created_at: float
    updated_at: float
    actor: str | None


def _image(r) -> HostImage:
    return HostImage(r.host, r.digest, r.repository, r.tag, bool(r.managed), r.bytes, r.pulled_at, r.last_used,
                     json.loads(r.containers or "[]"))


class HostStore:
    def __init__(self, conn: Connection):
        self.conn = conn

    # ---- hosts ------------------------------------------------------------------
    def add(self, name: str, token_hash: str, now: float) -> bool:
        """A new host, or a revoked one back with a new token; False if it is active already."""
        row = self.conn.execute(select(hosts.c.state).where(hosts.c.name == name)).first()
        if row is None:
            self.conn.execute(insert(hosts).values(name=name, token_hash=token_hash, state=ACTIVE, created_at=now))
            return True
        if row.state == ACTIVE:
            return False
        self.conn.execute(update(hosts).where(hosts.c.name == name).values(token_hash=token_hash, state=ACTIVE))
        return True

    def revoke(self, name: str) -> bool:
        return bool(self.conn.execute(update(hosts).where(hosts.c.name == name, hosts.c.state == ACTIVE)
                                      .values(token_hash=None, state=REVOKED)).rowcount)

    def by_token(self, token_hash: str) -> str | None:
        row = self.conn.execute(select(hosts.c.name).where(hosts.c.token_hash == token_hash,
                                                           hosts.c.state == ACTIVE)).first()
        return row.name if row else None

    def get(self, name: str) -> Host | None:
        """The host row alone (no image counts: this runs on every call a host makes)."""
        r = self.conn.execute(select(hosts).where(hosts.c.name == name)).first()
        return None if r is None else Host(r.name, r.state, r.address, r.version, r.created_at, r.last_seen)

    def list(self, name: str | None = None) -> list[Host]:
        counts = (select(host_images.c.host, func.count().label("n"), func.sum(host_images.c.bytes).label("b"))
                  .group_by(host_images.c.host).subquery())
        stmt = (select(hosts, counts.c.n, counts.c.b).select_from(hosts.outerjoin(counts, counts.c.host == hosts.c.name))
                .order_by(hosts.c.name))
        if name is not None:
            stmt = stmt.where(hosts.c.name == name)
        return [Host(r.name, r.state, r.address, r.version, r.created_at, r.last_seen, r.n or 0, int(r.b or 0))
                for r in self.conn.execute(stmt)]

    def heartbeat(self, name: str, address: str | None, version: str | None, now: float) -> None:
        self.conn.execute(update(hosts).where(hosts.c.name == name).values(address=address, version=version,
                                                                           last_seen=now))

    def heartbeat_seen(self, name: str, now: float) -> None:
        self.conn.execute(update(hosts).where(hosts.c.name == name).values(last_seen=now))

    # ---- images -----------------------------------------------------------------
    def images(self, name: str) -> list[HostImage]:
        return [_image(r) for r in self.conn.execute(
            select(host_images).where(host_images.c.host == name).order_by(host_images.c.repository,
                                                                          host_images.c.digest))]

    def replace_inventory(self, name: str, reported: Iterable[dict]) -> dict[str, int]:
        """Make the host's rows what its inventory says: new images inserted, known ones
        updated, the rest removed. An image once managed stays managed (only an explicit delete
        ends it). ``reported``: dicts with the columns of ``host_images`` but ``host``."""
        known = {r.digest: (r.managed, r.repository, r.tag, r.bytes, r.pulled_at, r.last_used, r.containers)
                 for r in self.conn.execute(select(host_images.c.digest, host_images.c.managed,
                                                   host_images.c.repository, host_images.c.tag, host_images.c.bytes,
                                                   host_images.c.pulled_at, host_images.c.last_used,
                                                   host_images.c.containers).where(host_images.c.host == name))}
        new, changed, seen = [], [], set()
        for item in reported:
            digest = item["digest"]
            if digest in seen:
                continue
            seen.add(digest)
            old = known.get(digest)
            row = {"host": name, "digest": digest, "repository": item["repository"], "tag": item.get("tag"),
                   "managed": int(bool(item.get("managed")) or bool(old and old[0])), "bytes": int(item["bytes"]),
                   "pulled_at": item.get("pulled_at"), "last_used": item.get("last_used"),
                   "containers": json.dumps(sorted(item.get("containers") or []))}
            if old is None:
                new.append(row)
            elif old != (row["managed"], row["repository"], row["tag"], row["bytes"], row["pulled_at"],
                         row["last_used"], row["containers"]):
                changed.append({**row, "h": name, "d": digest})
        gone = [d for d in known if d not in seen]
        if new:
            self.conn.execute(insert(host_images), new)
        if changed:
            self.conn.execute(update(host_images).where(host_images.c.host == bindparam("h"),
                                                        host_images.c.digest == bindparam("d"))
                              .values({c: bindparam("v_" + c) for c in _MUTABLE}),
                              [{"h": c["h"], "d": c["d"], **{"v_" + k: c[k] for k in _MUTABLE}} for c in changed])
        for i in range(0, len(gone), _IN_CHUNK):
            self.conn.execute(delete(host_images).where(host_images.c.host == name,
                                                        host_images.c.digest.in_(gone[i:i + _IN_CHUNK])))
        return {"images": len(seen), "added": len(new), "updated": len(changed), "removed": len(gone)}

    def find(self, name: str, repository: str, *, digest: str | None = None, tag: str | None = None) -> list[HostImage]:
        """The host's images of ``repository`` with that digest (or tag)."""
        stmt = select(host_images).where(host_images.c.host == name, host_images.c.repository == repository,
                                         (host_images.c.digest == digest) if digest else (host_images.c.tag == tag))
        return [_image(r) for r in self.conn.execute(stmt)]

    def put_image(self, name: str, item: dict, managed: bool) -> None:
        """One image a host confirmed it holds (a managed pull)."""
        self.conn.execute(delete(host_images).where(host_images.c.host == name,
                                                    host_images.c.digest == item["digest"]))
        self.conn.execute(insert(host_images).values(
            host=name, digest=item["digest"], repository=item["repository"], tag=item.get("tag"),
            managed=int(managed), bytes=int(item.get("bytes") or 0), pulled_at=item.get("pulled_at"),
            last_used=item.get("last_used"), containers=json.dumps(sorted(item.get("containers") or []))))

    def drop_image(self, name: str, digest: str) -> None:
        self.conn.execute(delete(host_images).where(host_images.c.host == name, host_images.c.digest == digest))

    def holders(self, repository: str, digest: str) -> list[str]:
        return [r.host for r in self.conn.execute(
            select(host_images.c.host).where(host_images.c.repository == repository, host_images.c.digest == digest)
            .order_by(host_images.c.host))]

    def holders_of_repository(self, repository: str) -> list[str]:
        return [r.host for r in self.conn.execute(
            select(host_images.c.host).where(host_images.c.repository == repository).distinct()
            .order_by(host_images.c.host))]

    def tagged_digest(self, repository: str, tag: str) -> str | None:
        """The digest ``repository:tag`` names in the registry now (None: no such tag)."""
        return self.conn.execute(
            select(manifests.c.digest).select_from(tags.join(manifests, manifests.c.id == tags.c.manifest_id)
                                                   .join(repositories, repositories.c.id == tags.c.repository_id))
            .where(repositories.c.name == repository, tags.c.name == tag)).scalar()

    def has_manifest(self, repository: str, digest: str) -> bool:
        """Whether ``repository@digest`` is an active manifest in the registry."""
        return self.conn.execute(
            select(manifests.c.id).select_from(manifests.join(repositories, repositories.c.id == manifests.c.repository_id))
            .where(repositories.c.name == repository, manifests.c.digest == digest, manifests.c.state == MANIFEST_ACTIVE)
        ).first() is not None

    def in_use(self) -> Iterator[tuple[str, str, str | None, str]]:
        """(repository, digest, tag, host) of every image a container on some host uses."""
        for r in self.conn.execute(select(host_images.c.repository, host_images.c.digest, host_images.c.tag,
                                          host_images.c.host).where(host_images.c.containers != "[]")):
            yield r.repository, r.digest, r.tag, r.host

    # ---- work -------------------------------------------------------------------
    def enqueue(self, name: str, kind: str, repository: str, reference: str, now: float, actor: str | None) -> int:
        """Queue work; the same work already queued (or failed) is set pending again instead."""
        row = self.conn.execute(select(host_work.c.id).where(
            host_work.c.host == name, host_work.c.kind == kind, host_work.c.repository == repository,
            host_work.c.reference == reference)).first()
        if row is not None:
            self.conn.execute(update(host_work).where(host_work.c.id == row.id).values(
                state=PENDING, error=None, updated_at=now, actor=actor))
            return row.id
        return self.conn.execute(insert(host_work).values(
            host=name, kind=kind, repository=repository, reference=reference, state=PENDING, created_at=now,
            updated_at=now, actor=actor).returning(host_work.c.id)).scalar_one()

    def work(self, name: str, state: str | None = None, limit: int | None = None) -> list[Work]:
        stmt = select(host_work).where(host_work.c.host == name).order_by(host_work.c.id)
        if state:
            stmt = stmt.where(host_work.c.state == state)
        if limit:
            stmt = stmt.limit(limit)
        return [Work(r.id, r.host, r.kind, r.repository, r.reference, r.state, r.error, r.created_at, r.updated_at,
                     r.actor) for r in self.conn.execute(stmt)]

    def work_item(self, name: str, work_id: int) -> Work | None:
        return next((w for w in self.work_by_ids(name, [work_id])), None)

    def work_by_ids(self, name: str, ids: list[int]) -> list[Work]:
        stmt = select(host_work).where(host_work.c.host == name, host_work.c.id.in_(ids))
        return [Work(r.id, r.host, r.kind, r.repository, r.reference, r.state, r.error, r.created_at, r.updated_at,
                     r.actor) for r in self.conn.execute(stmt)]

    def done(self, work_id: int) -> None:
        self.conn.execute(delete(host_work).where(host_work.c.id == work_id))

    def failed(self, work_id: int, error: str, now: float) -> None:
        self.conn.execute(update(host_work).where(host_work.c.id == work_id).values(
            state=FAILED, error=error[:2000], updated_at=now))
