"""A 2xx is durable: a SQLite commit is synced to disk before ``Database.write()`` returns
(not only written to the WAL, which a power loss can take back). SQLite runs with
synchronous=NORMAL and the registry syncs the log itself after the write lock is released
(group commit, meta/walsync.py); these tests watch the real syncs of the real file."""

import os
import threading
import time

import pytest
from sqlalchemy import text

from dockyard.meta.db import Database, DatabaseUnavailable


def test_sqlite_commits_are_synced(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'd.db'}")
    db.migrate()
    with db.read() as conn:
        # FULL (2), or NORMAL (1) with the log synced by write() itself (below)
        assert conn.execute(text("PRAGMA synchronous")).scalar() in (1, 2)
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def _watch_syncs(monkeypatch) -> list[str]:
    """The files synced from now on (fsync and fdatasync, by the path of the descriptor)."""
    synced: list[str] = []
    for name in ("fsync", "fdatasync"):
        real = getattr(os, name)

        def sync(fd, real=real):
            synced.append(os.readlink(f"/proc/self/fd/{fd}"))
            return real(fd)
        monkeypatch.setattr(os, name, sync)
    return synced


def _database(tmp_path) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'd.db'}")
    with db.write() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
    return db


def test_write_returns_after_the_log_is_synced(tmp_path, monkeypatch):
    db = _database(tmp_path)
    wal = str(tmp_path / "d.db-wal")
    synced = _watch_syncs(monkeypatch)
    with db.write() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
        assert wal not in synced  # not before the commit
    sqlite_synchronous = db.engine.connect().exec_driver_sql("PRAGMA synchronous").scalar()
    assert wal in synced or sqlite_synchronous == 2


def test_a_read_that_wrote_is_synced_too(tmp_path, monkeypatch):
    db = _database(tmp_path)
    synced = _watch_syncs(monkeypatch)
    with db.read() as conn:
        conn.execute(text("SELECT count(*) FROM t")).scalar()
    assert str(tmp_path / "d.db-wal") not in synced  # a plain read syncs nothing
    with db.read() as conn:
        conn.execute(text("INSERT INTO t VALUES (2)"))
    assert str(tmp_path / "d.db-wal") in synced


def test_concurrent_commits_share_syncs_and_each_waits_for_one(tmp_path, monkeypatch):
    """Each writer returns only after a sync that started after its statements ran (so after
    its commit's frames were written) has finished; concurrent commits share syncs."""
    db = _database(tmp_path)
    syncs: list[tuple[float, float]] = []
    lock = threading.Lock()
    real = os.fdatasync

    def slow_sync(fd):  # a slow disk: commits pile up behind a sync
        started = time.monotonic()
        time.sleep(0.02)
        real(fd)
        with lock:
            syncs.append((started, time.monotonic()))
    monkeypatch.setattr(os, "fdatasync", slow_sync)
    spans: list[tuple[float, float]] = []

    def writer(n):
        with db.write() as conn:
            conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})
            wrote = time.monotonic()
        with lock:
            spans.append((wrote, time.monotonic()))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(spans) == 20
    for wrote, returned in spans:
        assert any(wrote < s and e <= returned for s, e in syncs), "a write returned before its sync"
    assert 1 <= len(syncs) < 20, f"{len(syncs)} syncs for 20 concurrent commits: no grouping"
    with db.read() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 20


def test_a_failed_sync_is_unavailable_not_success(tmp_path, monkeypatch):
    db = _database(tmp_path)

    def broken(fd):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(os, "fdatasync", broken)
    with pytest.raises(DatabaseUnavailable), db.write() as conn:
        conn.execute(text("INSERT INTO t VALUES (3)"))
    monkeypatch.undo()
    with db.write() as conn:  # the next commit syncs again (and so covers the earlier one)
        conn.execute(text("INSERT INTO t VALUES (4)"))
    assert db.wal_sync.syncs >= 1
