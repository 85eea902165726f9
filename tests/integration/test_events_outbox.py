"""The events outbox on real SQLite and PostgreSQL: delivery order never skips an event that
commits late, endpoint cursors are leased to one replica at a time, the bound drops and counts."""

from __future__ import annotations

import threading
import time

import pytest

from dockyard.meta.db import Database
from dockyard.meta.events import EventStore
from tests.support import postgres_database


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path):
    if request.param == "sqlite":
        d = Database(f"sqlite:///{tmp_path / 'dockyard.db'}")
        d.migrate()
        yield d
        d.dispose()
    else:
        with postgres_database() as url:
            d = Database("postgresql+psycopg://" + url.split("://", 1)[1])
            d.migrate()
            yield d
            d.dispose()


def _settled(db, position, n, timeout=20.0):
    """The events past ``position`` once ``n`` are visible: on PostgreSQL xids are
    cluster-wide, so a transaction of another database (another test) holds xmin back a while."""
    deadline = time.monotonic() + timeout
    while True:
        with db.read() as conn:
            got = EventStore(conn).after(position, 1000)
        if len(got) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def _record(db, kind, repo, n=1):
    with db.write() as conn:
        for _ in range(n):
            EventStore(conn).record(kind, repo, {"x": 1}, 1.0)


def test_an_event_committed_late_is_not_skipped(db):
    """T1 records first and commits last: a cursor must not move past T2's event while T1
    runs, or T1's event (lower txid and id) would never be delivered."""
    if not db.is_postgres:
        pytest.skip("SQLite has one writer: ids are in commit order")
    with db.write() as conn:
        EventStore(conn).ensure_cursor("hook")
    started, release = threading.Event(), threading.Event()

    def slow():
        with db.write() as conn:
            EventStore(conn).record("push", "r/slow", {}, 1.0)
            started.set()
            release.wait(10)

    t = threading.Thread(target=slow)
    t.start()
    started.wait(10)
    _record(db, "push", "r/fast")
    with db.read() as conn:
        store = EventStore(conn)
        pos = store.cursors()["hook"].position
        assert store.after(pos, 100) == []  # T1 still runs: nothing may pass it
    release.set()
    t.join()
    got = _settled(db, pos, 2)
    assert [e.repository for e in got] == ["r/slow", "r/fast"]


def test_a_new_endpoint_starts_after_existing_events(db):
    _record(db, "push", "r/a", 3)
    with db.write() as conn:
        EventStore(conn).ensure_cursor("late")
    _record(db, "delete", "r/a")
    with db.read() as conn:
        position = EventStore(conn).cursors()["late"].position
    got = _settled(db, position, 1)
    assert got[-1].kind == "delete"
    if not db.is_postgres:
        assert len(got) == 1
    # PostgreSQL: it starts before every transaction running then (xids are cluster-wide, so
    # another database's may hold it back): older events may come too, never fewer


def test_one_replica_at_a_time_holds_an_endpoint(db):
    with db.write() as conn:
        EventStore(conn).ensure_cursor("hook")
        assert EventStore(conn).claim("hook", "replica-1", 100.0, 30.0) is not None
    with db.write() as conn:
        assert EventStore(conn).claim("hook", "replica-2", 110.0, 30.0) is None  # leased
        assert not EventStore(conn).advance("hook", "replica-2", (0, 5), 1, 110.0, 30.0)
    with db.write() as conn:
        assert EventStore(conn).claim("hook", "replica-2", 131.0, 30.0) is not None  # lease expired
        assert not EventStore(conn).advance("hook", "replica-1", (0, 5), 1, 131.0, 30.0)  # lost it
    with db.write() as conn:
        store = EventStore(conn)
        store.failed("hook", "replica-2", (0, 0), "HTTP 503", 200.0)
        store.release("hook", "replica-2")
        assert store.claim("hook", "replica-1", 150.0, 30.0) is None  # retry not due yet
        cur = store.cursors()["hook"]
    assert cur.attempts == 1 and cur.last_error == "HTTP 503"


def test_the_bound_drops_oldest_and_counts_per_endpoint(db):
    with db.write() as conn:
        EventStore(conn).ensure_cursor("behind")
    _record(db, "push", "r/a", 10)
    with db.read() as conn:
        behind = EventStore(conn).cursors()["behind"].position
    ten = _settled(db, behind, 10)
    assert len(ten) == 10
    with db.write() as conn:
        dropped = EventStore(conn).trim(4)
    assert dropped == {"behind": 6}
    with db.read() as conn:
        store = EventStore(conn)
        assert store.count() == 4
        assert store.cursors()["behind"].dropped == 6
        assert [e.id for e in store.after(store.cursors()["behind"].position, 100)] == [e.id for e in ten[6:]]


def test_two_replicas_deliver_each_event_once(tmp_path):
    """Two deliverers (replicas) of one endpoint on one PostgreSQL database, running at the
    same time while events are written: every event arrives, in order, none twice (nobody
    died, so at-least-once needs no duplicate here)."""
    from dockyard.api.webhooks import Delivery
    from dockyard.events import verify
    from tests.lifecycle_support import make_registry
    from tests.webhook_receiver import Receiver

    receiver = Receiver().start()
    hooks = {"hook": {"url": receiver.url, "secret": "k"}}
    try:
        with make_registry(tmp_path, "postgres", notifications=hooks) as reg:
            endpoint = reg.config.notifications["hook"]
            replicas = [Delivery(reg, endpoint, owner=f"replica-{i}") for i in range(2)]
            for d in replicas:
                d.run()  # creates the cursor: it starts after the events that exist now
            stop = threading.Event()

            def deliver(d):
                while not stop.wait(0.01):
                    d.run()

            threads = [threading.Thread(target=deliver, args=(d,)) for d in replicas]
            for t in threads:
                t.start()
            for i in range(60):
                _record(reg.db, "push", f"r/{i % 3}")
            with reg.db.read() as conn:
                expected = [e.id for e in reversed(EventStore(conn).recent(1000))]
            deadline = time.monotonic() + 30
            while len(receiver.events()) < len(expected) and time.monotonic() < deadline:
                time.sleep(0.05)
            stop.set()
            for t in threads:
                t.join(10)
            for d in replicas:
                d.close()
    finally:
        receiver.stop()
    got = receiver.deliveries()
    assert all(verify("k", body, h["x-dockyard-signature"]) for h, body in got)
    assert [e["id"] for e in receiver.events()] == expected


def test_the_trim_job_counts_drops_in_a_metric_and_logs(tmp_path, caplog):
    from dockyard.api.webhooks import Trim
    from tests.lifecycle_support import make_registry

    hooks = {"hook": {"url": "http://127.0.0.1:9/never"}}
    with make_registry(tmp_path, "sqlite", notifications=hooks, events_max=3) as reg:
        with reg.db.write() as conn:
            EventStore(conn).ensure_cursor("hook")
        _record(reg.db, "push", "r/a", 5)
        with caplog.at_level("WARNING"):
            assert Trim(reg).run().as_dict()["kinds"] == {"dropped for hook": {"objects": 2, "bytes": 0, "failures": 0}}
        assert reg.metrics.get("dockyard_events_dropped_total", endpoint="hook") == 2
        assert "2 undelivered events dropped" in caplog.text
        assert Trim(reg).run().as_dict()["kinds"] == {}


def test_prune_and_collection_runs_are_events(tmp_path):
    from dockyard.lifecycle.collector import Collector
    from dockyard.lifecycle.prune import Pruner
    from dockyard.policies import Policy
    from tests.lifecycle_support import make_registry, put_image

    with make_registry(tmp_path, "sqlite", delayed_delete=False, gc_delay=0) as reg:
        for i in range(3):
            put_image(reg, "p/app", f"v{i}", f"seed-{i}")
        Pruner(reg, Policy.parse("one", {"repositories": ["p/*"], "keep_recent": 1}), confirm=True,
               actor="alice").run()
        Pruner(reg, Policy.parse("one", {"repositories": ["p/*"], "keep_recent": 1})).run()  # a dry run: none
        Collector.for_registry(reg).run()
        with reg.db.read() as conn:
            got = list(reversed(EventStore(conn).recent(100)))
    kinds = [e.kind for e in got]
    assert kinds == ["push"] * 3 + ["delete", "prune", "gc"]
    delete, prune, gc = got[3:]
    assert delete.repository == "p/app" and len(delete.payload["digests"]) == 2 and delete.actor == "alice"
    assert prune.repository is None and prune.payload["policy"] == "one"
    assert gc.payload["totals"]["objects"] > 0
