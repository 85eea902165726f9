"""Database.run: the write transactions of concurrent threads share one SQLite transaction
(one writer's turn), each body in its own savepoint; serial semantics, a failing body is
rolled back alone, and a caller returns only after the shared commit is synced."""

import contextlib
import functools
import os
import threading
import time

import pytest
from sqlalchemy import text

from dockyard.meta.db import Database, DatabaseUnavailable


def _database(tmp_path) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'd.db'}")
    with db.write() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER PRIMARY KEY)"))
    return db


def _rows(db: Database) -> list[int]:
    with db.read() as conn:
        return [r[0] for r in conn.execute(text("SELECT n FROM t ORDER BY n"))]


def test_a_lone_body_runs_at_once_and_returns_its_result(tmp_path):
    db = _database(tmp_path)
    assert db.run(lambda conn: conn.execute(text("INSERT INTO t VALUES (1)")).rowcount) == 1
    assert _rows(db) == [1]


def _held_group(db: Database, bodies):
    """Run ``bodies`` (each in its own thread, queued in this order) while the group before
    them is held, so they all queue and run as one group; returns ({index: result or
    exception}, groups run from the held one's end)."""
    gate, inside = threading.Event(), threading.Event()

    def holder(conn):
        inside.set()
        assert gate.wait(10)
        conn.execute(text("INSERT INTO t VALUES (0)"))

    out: dict = {}

    def call(i, fn):
        try:
            out[i] = db.run(fn)
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            out[i] = exc

    first = threading.Thread(target=call, args=("holder", holder))
    first.start()
    assert inside.wait(10)
    threads = [threading.Thread(target=call, args=(i, fn)) for i, fn in enumerate(bodies)]
    deadline = time.monotonic() + 10
    for i, t in enumerate(threads):  # queued in this order
        t.start()
        while len(db._group_pending) < i + 1 and time.monotonic() < deadline:
            time.sleep(0.002)
    groups = db.groups
    gate.set()
    for t in [first, *threads]:
        t.join(10)
    return out, db.groups - groups


def test_concurrent_bodies_share_one_transaction_and_a_failing_one_is_rolled_back_alone(tmp_path):
    db = _database(tmp_path)

    def insert(n):
        def body(conn):
            conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})
            return n
        return body

    def failing(conn):
        conn.execute(text("INSERT INTO t VALUES (100)"))  # rolled back with its savepoint
        raise ValueError("refused")

    def duplicate(conn):  # a statement error (the row of an earlier body): this body alone fails
        conn.execute(text("INSERT INTO t VALUES (101)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))

    out, groups = _held_group(db, [insert(1), failing, insert(2), duplicate, insert(3)])
    assert out[0] == 1 and out[2] == 2 and out[4] == 3
    assert isinstance(out[1], ValueError)
    assert isinstance(out[3], Exception) and not isinstance(out[3], ValueError)
    assert groups == 1, "the five queued bodies ran as one group after the held one"
    assert _rows(db) == [0, 1, 2, 3]


def test_bodies_run_one_after_the_other_and_see_earlier_writes(tmp_path):
    db = _database(tmp_path)
    seen: list[int] = []

    def body(conn):
        n = conn.execute(text("SELECT count(*) FROM t")).scalar()
        seen.append(n)
        conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": n + 10})

    _held_group(db, [body] * 4)
    assert sorted(seen) == [1, 2, 3, 4]  # each saw every earlier body's row (the held one's first)
    assert _rows(db) == [0, 11, 12, 13, 14]


def test_a_caller_returns_after_the_shared_commit_is_synced(tmp_path, monkeypatch):
    db = _database(tmp_path)
    wal = str(tmp_path / "d.db-wal")
    synced: list[str] = []
    real = os.fdatasync

    def fdatasync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)
    monkeypatch.setattr(os, "fdatasync", fdatasync)

    def body(conn):
        conn.execute(text("INSERT INTO t VALUES (7)"))
        assert wal not in synced
    db.run(body)
    assert wal in synced
    synced.clear()
    db.run(lambda conn: conn.execute(text("INSERT INTO t VALUES (8)")), sync=False)
    assert wal not in synced


def test_a_failed_sync_fails_the_callers_that_wait_for_it(tmp_path, monkeypatch):
    db = _database(tmp_path)

    def broken(fd):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(os, "fdatasync", broken)
    with pytest.raises(DatabaseUnavailable):
        db.run(lambda conn: conn.execute(text("INSERT INTO t VALUES (9)")))


def test_a_run_inside_a_write_or_a_body_is_a_nested_write_not_a_wait_for_itself(tmp_path, monkeypatch):
    db = _database(tmp_path)
    nested: list[str] = []

    @contextlib.contextmanager
    def fake_write(*, sync=True):  # what a nested write would do: SQLite's own answer
        nested.append("write")
        yield "nested-conn"
    real_write = db.write

    def body(conn):
        return db.run(lambda c: c)

    monkeypatch.setattr(db, "write", fake_write)
    assert db.run(body) == "nested-conn"
    monkeypatch.setattr(db, "write", real_write)

    def outer():
        with db.write():
            monkeypatch.setattr(db, "write", fake_write)
            try:
                return db.run(lambda c: c)
            finally:
                monkeypatch.setattr(db, "write", real_write)
    assert outer() == "nested-conn"
    assert nested == ["write", "write"]


def _counted_insert(calls: list[int], n: int):
    """A body that inserts ``n`` and records each time it runs."""
    def body(conn):
        calls.append(n)
        conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})
        return n
    return body


def _failing(conn):
    conn.execute(text("INSERT INTO t VALUES (100)"))
    raise ValueError("refused")


def test_the_bodies_before_a_failing_one_run_again_and_commit_once(tmp_path):
    db = _database(tmp_path)
    calls: list[int] = []
    insert = functools.partial(_counted_insert, calls)

    out, groups = _held_group(db, [insert(1), _failing, insert(2)])
    assert out[0] == 1 and out[2] == 2 and isinstance(out[1], ValueError)
    assert groups == 1
    assert calls == [1, 1, 2]  # the group ran again without the failing body: one turn, one commit
    assert _rows(db) == [0, 1, 2]


def test_a_group_with_several_failing_bodies_runs_again_once(tmp_path):
    """After the first failure the group runs again with a savepoint per body, so further
    failing bodies are rolled back alone: a client repeating bad requests does not make the
    other members' bodies run once per failure."""
    db = _database(tmp_path)
    calls: list[int] = []
    insert = functools.partial(_counted_insert, calls)

    bodies = [insert(1), _failing, insert(2), _failing, insert(3), _failing, insert(4)]
    out, groups = _held_group(db, bodies)
    assert [out[i] for i in (0, 2, 4, 6)] == [1, 2, 3, 4]
    assert all(isinstance(out[i], ValueError) for i in (1, 3, 5))
    assert groups == 1
    assert calls == [1, 1, 2, 3, 4]  # one replay: the first pass stopped at the first failure
    assert _rows(db) == [0, 1, 2, 3, 4]


def test_a_member_whose_group_failed_gets_its_own_503(tmp_path, monkeypatch):
    """Something that ends the whole group (here the COMMIT) fails every member with its own
    DatabaseUnavailable (a 503), not one exception object shared by many threads."""
    db = _database(tmp_path)
    real = db._run_bodies

    def broken(conn, group):
        real(conn, group)
        raise OSError("the writer's lock file is gone")

    monkeypatch.setattr(db, "_run_bodies", broken)
    out, _ = _held_group(db, [lambda c: 1, lambda c: 2])
    errors = [out[0], out[1], out["holder"]]
    assert all(isinstance(e, DatabaseUnavailable) for e in errors), errors
    assert len({id(e) for e in errors}) == 3
