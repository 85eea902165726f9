"""Deadlocks and serialization failures on PostgreSQL: a unit of work runs again (db.retrying)
while none of its transactions has committed; after that, or after the last attempt, the
client gets a 503 with Retry-After, never a 500."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from dockyard.api.errors import render
from dockyard.meta import db as db_mod
from dockyard.meta.db import Database, DatabaseConflict, retrying
from tests.support import postgres_database


@pytest.fixture(scope="module")
def pg():
    with postgres_database() as url:
        database = Database(url.replace("postgresql://", "postgresql+psycopg://", 1))
        with database.write() as conn:
            conn.execute(text("CREATE TABLE t (id int PRIMARY KEY, n int NOT NULL)"))
            conn.execute(text("INSERT INTO t VALUES (1, 0), (2, 0)"))
        yield database
        database.dispose()


def _raise(conn, state: str) -> None:
    conn.execute(text(f"DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '{state}'; END $$"))


@pytest.mark.parametrize("state", ["40001", "40P01"])
def test_a_conflict_before_any_commit_runs_again(pg, state):
    calls = []

    def work():
        calls.append(1)
        with pg.read() as conn:
            conn.execute(text("SELECT n FROM t WHERE id = 1"))
        with pg.write() as conn:
            conn.execute(text("UPDATE t SET n = n + 1 WHERE id = 1"))
            if len(calls) < 3:
                _raise(conn, state)  # rolls the update back
        return "done"

    with pg.read() as conn:
        before = conn.execute(text("SELECT n FROM t WHERE id = 1")).scalar()
    assert retrying(work) == "done" and len(calls) == 3
    with pg.read() as conn:
        assert conn.execute(text("SELECT n FROM t WHERE id = 1")).scalar() == before + 1  # once, not three times


def test_a_conflict_after_a_commit_is_not_retried_and_is_a_503(pg):
    calls = []

    def work():
        calls.append(1)
        with pg.write() as conn:
            conn.execute(text("UPDATE t SET n = n + 1 WHERE id = 2"))
        with pg.write() as conn:
            _raise(conn, "40P01")

    with pytest.raises(DatabaseConflict) as caught:
        retrying(work)
    assert len(calls) == 1
    response = render(caught.value)
    assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0
    assert b'"UNAVAILABLE"' in response.body


def test_retries_are_bounded(pg):
    calls = []

    def work():
        calls.append(1)
        with pg.write() as conn:
            _raise(conn, "40001")

    with pytest.raises(DatabaseConflict):
        retrying(work)
    assert len(calls) == db_mod.RETRY_ATTEMPTS


def test_a_real_deadlock_resolves_by_retry(pg):
    """Two units lock the same two rows in opposite orders, each holding its first lock
    until the other has taken its own: PostgreSQL aborts one, which runs again."""
    both_hold = threading.Barrier(2, timeout=30)
    calls = {"ab": 0, "ba": 0}

    def unit(order: str):
        def work():
            calls[order] += 1
            first, second = (1, 2) if order == "ab" else (2, 1)
            with pg.write() as conn:
                conn.execute(text("SELECT n FROM t WHERE id = :i FOR UPDATE"), {"i": first})
                if calls[order] == 1:
                    both_hold.wait()
                conn.execute(text("UPDATE t SET n = n + 1 WHERE id = :i"), {"i": second})
        return lambda: retrying(work)

    errors = []

    def go(fn):
        try:
            fn()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(unit(o),)) for o in ("ab", "ba")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(calls.values()) == [1, 2]  # the deadlock's victim ran twice, the other once
