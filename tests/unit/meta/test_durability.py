"""A 2xx is durable: SQLite commits are synced to disk before COMMIT returns (not only
written to the WAL, which a power loss can take back)."""

from sqlalchemy import text

from dockyard.meta.db import Database


def test_sqlite_commits_are_synced(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'd.db'}")
    db.migrate()
    with db.read() as conn:
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
