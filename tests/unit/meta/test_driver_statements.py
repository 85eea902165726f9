"""The push path's fixed statements that run straight on SQLite's driver (``driver_execute``)
give what their SQLAlchemy statements give: the same results, the same rows written (values
and types), the same errors. One scenario of store calls, its transcript compared with one
literal on SQLite (driver statements on and off) and on PostgreSQL (SQLAlchemy's)."""

from sqlalchemy import event, select
from sqlalchemy import exc as sa_exc

from dockyard.meta import db as meta_db
from dockyard.meta.blobs import BlobStore
from dockyard.meta.events import EventStore
from dockyard.meta.manifests import ManifestStore
from dockyard.meta.quotas import QuotaStore
from dockyard.meta.repositories import RepositoryStore
from dockyard.meta.reviews import ReviewQueues
from dockyard.meta.schema import (
    COMMITTING,
    blobs,
    event_outbox,
    gc_link_reviews,
    manifest_references,
    manifests,
    repositories,
    repository_blobs,
    tag_history,
    tags,
    uploads,
)
from dockyard.meta.tags import TagStore
from dockyard.meta.tombstones import TombstoneStore
from dockyard.meta.uploads import UploadStore
from dockyard.oci.manifest import parse
from dockyard.quotas import Quota
from tests.support import OCI_MANIFEST, image_manifest, make_config, make_layer, sha256

BACKENDS = ["sqlite", "postgres"]
D1, D2, D3 = (f"sha256:{c * 64}" for c in "abc")
_TABLES = (repositories, uploads, blobs, repository_blobs, gc_link_reviews, tags, tag_history, manifests,
           manifest_references, event_outbox)


def _scenario(reg) -> list:
    out: list = []
    config, layer = make_config("drv"), make_layer("drv")
    payload = image_manifest(config, [layer])
    parsed = parse(payload, OCI_MANIFEST)
    with reg.db.write() as conn:
        repos, ups, bl = RepositoryStore(conn), UploadStore(conn), BlobStore(conn)
        out.append(("repo none", repos.get("t/a")))
        repo = repos.ensure("t/a", 100.0)
        out.append(("ensure", repo, repos.ensure("t/a", 101.0), repos.get("t/a"), repos.require("t/a")))
        ups.create("u1", repo.id, 101.0)
        ups.create("u2", repo.id, 101.5, writer="w0", writer_until=500.0)
        out.append(("claim free", ups.claim("u1", "tok", 102.0, 162.0)))
        out.append(("claim held", ups.claim("u2", "tok", 102.0, 162.0)))
        out.append(("claim expired", ups.claim("u2", "tok2", 600.0, 660.0)))
        out.append(("claim none", ups.claim("nope", "tok", 1.0, 2.0)))
        out.append(("get", ups.get("u1"), ups.get("nope")))
        out.append(("release", ups.release("u1", "other", 103.0, 10), ups.release("u1", "tok", 103.0, 4096),
                    ups.release("u1", "tok", 104.0)))
        ups.claim("u1", "tok3", 105.0, 165.0)
        out.append(("release no size", ups.release("u1", "tok3", 106.0), ups.get("u1")))
        out.append(("delete_claimed", ups.delete_claimed("u2", "tok"), ups.delete_claimed("u2", "tok2"),
                    ups.get("u2")))
        out.append(("lock none", bl.lock(D1)))
        out.append(("add", bl.add(D1, 4096, 107.0, state=COMMITTING), bl.add(D1, 5, 108.0), bl.add(D2, 7, 108.5)))
        out.append(("lock", bl.lock(D1)))
        bl.mark_ready(D1)
        out.append(("ready", bl.lock(D1), bl.lock(D2)))
        bl.link(repo.id, [D1, D2], 109.0, locked=True)
        bl.link(repo.id, [D1], 110.0)
        out.append(("linked_among", bl.linked_among(repo.id, [D3, D1, D2, D1]), bl.linked_among(repo.id, [D3])))
        queues = ReviewQueues(conn)
        queues.add_links(repo.id, [D1], 200.0, "uploaded")
        queues.add_links(repo.id, [D1], 150.0, "other")  # the later review time is kept
        queues.add_links(repo.id, [D2], 300.0, "uploaded")
        queues.add_links(repo.id, [D2], 350.0, "again")
        tombs = TombstoneStore(conn)
        tombs.add([{"key": "blobs/c", "kind": "blob", "digest": D3, "size": 1, "created_at": 1.0,
                    "next_attempt_at": 900.0, "lease_owner": "h:1"}])
        out.append(("tombstone", tombs.cancel_idle(D1, 111.0), tombs.cancel_idle(D3, 111.0),
                    tombs.cancel_idle(D3, 901.0), tombs.cancel_idle(D3, 902.0)))
        ts, ms = TagStore(conn), ManifestStore(conn)
        out.append(("manifest none", ms.get(repo.id, sha256(payload)), ms.get(repo.id, sha256(payload), lock=True,
                                                                             any_state=True)))
        manifest, revived = ms.put(repo.id, sha256(payload), parsed, payload, 112.0)
        out.append(("put", manifest, revived, ms.put(repo.id, sha256(payload), parsed, payload, 113.0)))
        out.append(("manifest", ms.get(repo.id, sha256(payload)), ms.get(repo.id, sha256(payload), any_state=True,
                                                                         lock=True)))
        out.append(("tag none", ts.get(repo.id, "v1")))
        out.append(("tag set", ts.set(repo.id, "v1", manifest.id, manifest.digest, 114.0, "alice"), ts.get(repo.id, "v1"),
                    ts.set(repo.id, "v1", manifest.id, manifest.digest, 115.0, None)))
        other = ms.put(repo.id, sha256(b"{}"), parsed, b"{}", 116.0)[0]
        out.append(("tag move", ts.set(repo.id, "v1", other.id, other.digest, 117.0, None), ts.get(repo.id, "v1")))
        EventStore(conn).record("push", "t/a", {"tag": "v1", "digest": D1, "size": 3}, 118.0, "alice")
        EventStore(conn).record("quota", None, {}, 119.0)
        quotas = QuotaStore(conn)
        out.append(("quotas none", quotas.stored()))
        quotas.put(Quota("q1", "t/*", 1000, 0.5), 120.0, None)
        quotas.put(Quota("q0", "x/*", 10, 1), 120.0, None)
        out.append(("quotas", quotas.stored()))
        conn.exec_driver_sql("SELECT 'the rows'")  # (a mark among the executes SQLAlchemy saw)
        for table in _TABLES:  # every row the statements wrote, as the backend returns it
            columns = [c for c in table.columns if c.name != "txid"]  # PostgreSQL's transaction id
            rows = conn.execute(select(*columns).order_by(*table.primary_key.columns)).all()
            out.append((table.name, [tuple((type(v).__name__, v) for v in r) for r in rows]))
        txids = conn.execute(select(event_outbox.c.txid)).scalars().all()
        out.append(("txids", len(txids), len(set(txids)), txids[0] == 0))
    out.append(("errors", _error(reg, lambda c: UploadStore(c).create("u1", repo.id, 1.0)),
                _error(reg, lambda c: UploadStore(c).create("u9", 999, 1.0)),
                _error(reg, lambda c: BlobStore(c).link(999, [D1], 1.0, locked=True))))
    return out


def _error(reg, body):
    """The error a body raises inside a write (its class, from SQLAlchemy's hierarchy)."""
    try:
        with reg.db.write() as conn:
            body(conn)
    except sa_exc.SQLAlchemyError as exc:
        return type(exc).__name__
    return None


def _executes(reg) -> list:
    """SQLAlchemy executes seen while ``reg``'s database runs (the driver's are not)."""
    seen: list = []
    event.listen(reg.db.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen


# what the scenario itself runs through SQLAlchemy (not the push path's statements)
_NOT_HOT = ("INSERT INTO repositories ", "INSERT INTO gc_tombstones ", "DELETE FROM gc_tombstones ",
            "INSERT INTO quotas ")


def test_the_driver_statements_give_what_sqlalchemy_gives(reg, backend, monkeypatch, tmp_path):
    executes = _executes(reg)
    got = _scenario(reg)
    expected = _expected()
    if backend == "postgres":  # one transaction: one txid for both events
        expected[expected.index(("txids", 2, 1, True))] = ("txids", 2, 1, False)
    assert got == expected
    if backend != "sqlite":
        return
    hot = [s for s in executes[:executes.index("SELECT 'the rows'")] if not s.startswith(_NOT_HOT)]
    assert hot == [], hot  # all of them went to the driver: SQLAlchemy never saw them
    # the same scenario on a fresh SQLite database, through SQLAlchemy's statements this time
    from tests.lifecycle_support import make_registry

    monkeypatch.setattr(meta_db, "DRIVER_STATEMENTS", False)
    with make_registry(tmp_path / "sqlalchemy", "sqlite") as other:
        executes = _executes(other)
        assert _scenario(other) == got
    assert any(s.startswith("UPDATE uploads") for s in executes)  # SQLAlchemy's statements ran


def _expected() -> list:
    from dockyard.meta.blobs import BlobRow
    from dockyard.meta.manifests import Manifest
    from dockyard.meta.repositories import Repository
    from dockyard.meta.tags import Tag
    from dockyard.meta.uploads import Upload

    config, layer = make_config("drv"), make_layer("drv")
    payload = image_manifest(config, [layer])
    digest, artifact = sha256(payload), parse(payload, OCI_MANIFEST).artifact_type
    repo = Repository(1, "t/a", None)
    m1 = Manifest(1, 1, digest, OCI_MANIFEST, len(payload), "active", artifact, None)
    refs = sorted([("blob", sha256(config)), ("blob", sha256(layer))])
    return [
        ("repo none", None),
        ("ensure", repo, repo, repo, repo),
        ("claim free", (Upload("u1", 1, 0, 101.0), True)),
        ("claim held", (Upload("u2", 1, 0, 101.5), False)),
        ("claim expired", (Upload("u2", 1, 0, 101.5), True)),
        ("claim none", (None, False)),
        ("get", Upload("u1", 1, 0, 101.0), None),
        ("release", False, True, False),
        ("release no size", True, Upload("u1", 1, 4096, 101.0)),
        ("delete_claimed", False, True, None),
        ("lock none", None),
        ("add", True, False, True),
        ("lock", BlobRow(D1, 4096, "committing", 107.0)),
        ("ready", BlobRow(D1, 4096, "ready", 107.0), BlobRow(D2, 7, "ready", 108.5)),
        ("linked_among", {D1: 4096, D2: 7}, {}),
        ("tombstone", "none", "busy", "cancelled", "none"),
        ("manifest none", None, None),
        ("put", m1, False, (m1, False)),
        ("manifest", m1, m1),
        ("tag none", None),
        ("tag set", None, Tag("v1", 1, digest), None),
        ("tag move", 1, Tag("v1", 2, sha256(b"{}"))),
        ("quotas none", {}),
        ("quotas", {"q0": Quota("q0", "x/*", 10, 1.0), "q1": Quota("q1", "t/*", 1000, 0.5)}),
        ("repositories", [(("int", 1), ("str", "t/a"), ("float", 100.0), ("NoneType", None))]),
        ("uploads", [(("str", "u1"), ("int", 1), ("int", 4096), ("float", 101.0), ("float", 106.0),
                      ("NoneType", None), ("NoneType", None))]),
        ("blobs", [(("str", D1), ("int", 4096), ("float", 107.0), ("str", "ready")),
                   (("str", D2), ("int", 7), ("float", 108.5), ("str", "ready"))]),
        ("repository_blobs", [(("int", 1), ("str", D1), ("float", 109.0)), (("int", 1), ("str", D2), ("float", 109.0))]),
        ("gc_link_reviews", [(("int", 1), ("str", D1), ("float", 200.0), ("str", "uploaded")),
                             (("int", 1), ("str", D2), ("float", 350.0), ("str", "uploaded"))]),
        ("tags", [(("int", 1), ("str", "v1"), ("int", 2), ("float", 117.0))]),
        ("tag_history", [(("int", 1), ("int", 1), ("str", "v1"), ("str", digest), ("str", "push"), ("float", 114.0),
                          ("str", "alice")),
                         (("int", 2), ("int", 1), ("str", "v1"), ("str", sha256(b"{}")), ("str", "move"),
                          ("float", 117.0), ("NoneType", None))]),
        ("manifests", [(("int", 1), ("int", 1), ("str", digest), ("str", OCI_MANIFEST), ("str", artifact),
                        ("int", len(payload)), ("bytes", payload), ("NoneType", None), ("NoneType", None),
                        ("str", "active"), ("float", 112.0), ("float", 112.0), ("NoneType", None), ("NoneType", None),
                        ("NoneType", None), ("NoneType", None)),
                       (("int", 2), ("int", 1), ("str", sha256(b"{}")), ("str", OCI_MANIFEST), ("str", artifact),
                        ("int", 2), ("bytes", b"{}"), ("NoneType", None), ("NoneType", None),
                        ("str", "active"), ("float", 116.0), ("float", 116.0), ("NoneType", None), ("NoneType", None),
                        ("NoneType", None), ("NoneType", None))]),
        ("manifest_references", [(("int", 1), ("str", k), ("str", d), ("int", 1)) for k, d in refs]
         + [(("int", 2), ("str", k), ("str", d), ("int", 1)) for k, d in refs]),
        ("event_outbox", [(("int", 1), ("float", 118.0), ("str", "push"), ("str", "t/a"), ("str", "alice"),
                           ("str", f'{{"digest":"{D1}","size":3,"tag":"v1"}}')),
                          (("int", 2), ("float", 119.0), ("str", "quota"), ("NoneType", None), ("NoneType", None),
                           ("str", "{}"))]),
        ("txids", 2, 1, True),
        ("errors", "IntegrityError", "IntegrityError", "IntegrityError"),
    ]
