"""The registry's side of ``dockyard agent``: hosts, their credentials, what they hold, their work.

A host is added by an admin (``dockyard host add``), which prints its token once; only a
hash of it is stored. The agent heartbeats, reports its inventory and polls for work; a
work item (pull or delete of one image on that host) leaves the queue only when the host
confirms it; a failure stays visible with its error until the work is asked for again.
Deleting on a host never touches the registry's copy; deleting in the registry reports the
hosts that still hold the image.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from dataclasses import asdict
from typing import Iterable

from dockyard.errors import Conflict, RegistryError
from dockyard.lifecycle import deletes
from dockyard.meta.hosts import FAILED, PENDING, REVOKED, HostStore
from dockyard.oci.references import InvalidReference, parse_reference

log = logging.getLogger(__name__)

TOKEN_PREFIX = "dyh_"
_HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
KINDS = ("pull", "delete")


def check_host(name: str) -> str:
    if not isinstance(name, str) or not _HOST_NAME.match(name):
        raise RegistryError("NAME_INVALID", "invalid host name (letters, digits, . _ -; at most 63)",
                            {"host": str(name)[:80]})
    return name


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def unknown_host(name: str) -> RegistryError:
    return RegistryError("NAME_UNKNOWN", "no such host", {"host": name})


def add_host(reg, name: str) -> str:
    """A new host credential; the token is returned once and stored hashed."""
    check_host(name)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with reg.db.write() as conn:
        if not HostStore(conn).add(name, token_hash(token), reg.now()):
            raise Conflict("DENIED", "host exists (remove it first to issue a new token)", {"host": name})
    log.info("host %s added", name)
    return token


def remove_host(reg, name: str) -> bool:
    """Revoke the host's credential; its rows stay (what it holds is still accounted for)."""
    check_host(name)
    with reg.db.write() as conn:
        found = HostStore(conn).revoke(name)
    if found:
        log.info("host %s removed (credential revoked)", name)
    return found


def host_for_token(reg, token: str) -> str | None:
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    with reg.db.read() as conn:
        return HostStore(conn).by_token(token_hash(token))


def _state(reg, host) -> str:
    if host.state == REVOKED:
        return REVOKED
    if host.last_seen is None or reg.now() - host.last_seen > reg.config.host_down_after:
        return "down"
    return "up"


def list_hosts(reg) -> list[dict]:
    with reg.db.read() as conn:
        found = HostStore(conn).list()
    return [{**asdict(h), "state": _state(reg, h)} for h in found]


def _require(conn, name: str, *, active: bool = True):
    """The host row; an unknown host (or, with ``active``, a removed one) is 404 HOST_UNKNOWN."""
    host = HostStore(conn).get(check_host(name))
    if host is None or (active and host.state == REVOKED):
        raise unknown_host(name)
    return host


def host_images(reg, name: str) -> dict:
    """The host's images as its last inventory said, each with the delete asked for it (pending
    or failed with its error), and the host's queued work."""
    with reg.db.read() as conn:
        host = _require(conn, name, active=False)
        store = HostStore(conn)
        images, work = store.images(name), store.work(name)
    deletes_of = {w.reference: w for w in work if w.kind == "delete"}
    out = []
    for i in images:
        w = deletes_of.get(i.digest)
        out.append({**asdict(i), "delete": {"state": w.state, "error": w.error, "id": w.id} if w else None})
    return {"host": name, "state": _state(reg, host), "last_seen": host.last_seen, "images": out,
            "work": [asdict(w) for w in work]}


def _parse(reference: str):
    try:
        ref = parse_reference(reference)
    except InvalidReference as exc:
        raise RegistryError("NAME_INVALID", "invalid reference (REPOSITORY:TAG or REPOSITORY@DIGEST)",
                            {"reference": reference[:200], "reason": str(exc)}) from exc
    if ref.host:
        raise RegistryError("NAME_INVALID", "a reference to this registry has no host part",
                            {"reference": reference[:200]})
    return ref


def request(reg, name: str, kind: str, reference: str, actor: str | None, *, dry_run: bool = False) -> dict:
    """Queue a managed pull or a delete of one image on one host (a delete names the digest the
    host holds; by tag it is the image the host holds under that tag)."""
    if kind not in KINDS:
        raise RegistryError("UNSUPPORTED", "work is pull or delete", {"kind": kind[:40]})
    ref = _parse(reference)
    with (reg.db.read() if dry_run else reg.db.write()) as conn:
        _require(conn, name)
        store = HostStore(conn)
        if kind == "pull":
            target = ref.digest or ref.tag or "latest"
            if (store.tagged_digest(ref.repository, target) is None if not ref.digest
                    else not store.has_manifest(ref.repository, ref.digest)):
                raise RegistryError("MANIFEST_UNKNOWN", "manifest unknown", {"reference": reference})
            held = []
        else:
            held = store.find(name, ref.repository, digest=ref.digest, tag=ref.tag or "latest")
            if not held:
                raise RegistryError("MANIFEST_UNKNOWN", "the host holds no such image", {"host": name,
                                    "reference": reference})
            target = held[0].digest
        report = {"host": name, "kind": kind, "repository": ref.repository, "reference": target,
                  "dry_run": dry_run, "bytes": sum(i.bytes for i in held)}
        if not dry_run:
            report["queued_at"] = reg.now()
            report["id"] = store.enqueue(name, kind, ref.repository, target, report["queued_at"], actor)
            report["state"] = PENDING
    if not dry_run:
        log.info("host %s: %s %s@%s queued by %s", name, kind, ref.repository, target, actor or "-")
    return report


def heartbeat(reg, name: str, address: str | None, version: str | None) -> None:
    with reg.db.write() as conn:
        _require(conn, name)
        HostStore(conn).heartbeat(name, (address or "")[:255] or None, (version or "")[:64] or None, reg.now())


def poll(reg, name: str, limit: int = 1000) -> list[dict]:
    with reg.db.read() as conn:
        _require(conn, name)
        return [asdict(w) for w in HostStore(conn).work(name, PENDING, limit)]


def inventory(reg, name: str, items: Iterable[dict]) -> dict:
    with reg.db.write() as conn:
        _require(conn, name)
        counts = HostStore(conn).replace_inventory(name, items)
        HostStore(conn).heartbeat_seen(name, reg.now())
    reg.metrics.set("dockyard_host_images", counts["images"], host=name)
    return counts


def confirm(reg, name: str, results: list[dict]) -> dict:
    """The host's answers for work items: ``{"id", "ok", "error", "image"}``. Success removes
    the work (and for a delete the image's row, in the same transaction); a failure keeps both."""
    done = failed = 0
    now = reg.now()
    with reg.db.write() as conn:
        _require(conn, name)
        store = HostStore(conn)
        items = {w.id: w for w in store.work_by_ids(name, [int(r["id"]) for r in results])}
        for r in results:
            w = items.get(int(r["id"]))
            if w is None:
                continue  # asked again meanwhile and confirmed, or not this host's
            if r.get("ok"):
                if w.kind == "delete":
                    store.drop_image(name, w.reference)
                elif r.get("image"):
                    store.put_image(name, r["image"], managed=True)
                store.done(w.id)
                done += 1
            else:
                store.failed(w.id, str(r.get("error") or "failed"), now)
                failed += 1
    for r in results:
        w = items.get(int(r["id"]))
        if w is not None:
            log.info("host %s: %s %s@%s %s%s", name, w.kind, w.repository, w.reference,
                     "done" if r.get("ok") else "FAILED: ", "" if r.get("ok") else str(r.get("error"))[:200])
            reg.metrics.inc("dockyard_host_work_total", kind=w.kind, result="done" if r.get("ok") else FAILED)
    return {"done": done, "failed": failed}


def delete_in_registry(reg, reference: str, actor: str | None, *, dry_run: bool = False) -> dict:
    """Delete an image in the registry (into the trash) and say which hosts still hold a copy:
    a host copy is never deleted by this, and never left unaccounted for."""
    ref = _parse(reference)
    with reg.db.read() as conn:
        store = HostStore(conn)
        digest = ref.digest or store.tagged_digest(ref.repository, ref.tag or "latest")
        if digest is not None and ref.digest and not store.has_manifest(ref.repository, digest):
            digest = None  # a dry run answers what the delete would: no such image
        holders = store.holders(ref.repository, digest) if digest else []
    if digest is None:
        raise RegistryError("MANIFEST_UNKNOWN", "manifest unknown", {"reference": reference})
    if not dry_run:
        deletes.delete_manifest(reg, ref.repository, ref.digest or ref.tag or "latest", actor)
    return {"reference": reference, "repository": ref.repository, "digest": digest, "deleted": not dry_run,
            "what": "image (to the trash)" if ref.digest else "tag (the image stays while other tags or "
                                                             "the collector's rules keep it)",
            "dry_run": dry_run, "hosts_holding": holders}
