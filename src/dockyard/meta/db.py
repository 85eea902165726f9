"""Engine set-up, transactions and migrations, for SQLite and PostgreSQL alike.

``Database.write()`` is one write transaction (on SQLite ``BEGIN IMMEDIATE``, so two
writers queue instead of failing on a lock upgrade); ``Database.read()`` is a read
transaction. Both commit on success and roll back on an exception. Never hold one
open while streaming blob bytes.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterator

from sqlalchemy import (ColumnElement, Connection, Engine, bindparam, create_engine, event, func, literal_column,
                        select, text, tuple_)
from sqlalchemy.dialects import postgresql, sqlite

MIGRATIONS = Path(__file__).with_name("migrations")
_PG_MIGRATION_LOCK = 0x646F636B  # "dock"


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):  # pragma: no cover - exercised by every sqlite test
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        immediate = conn.get_execution_options().get("dockyard_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database:
    def __init__(self, url: str):
        self.url = url
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            # as many connections as request threads: opening one costs four PRAGMAs
            self.engine = create_engine(url, pool_size=40, max_overflow=40)
            _sqlite_setup(self.engine)
        else:
            # a server shared by replicas: keep each process's share of max_connections modest
            self.engine = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
        self.dialect = self.engine.dialect.name

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn = conn.execution_options(dockyard_write=True)
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            with conn.begin():
                yield conn

    def dispose(self) -> None:
        self.engine.dispose()

    # ---- migrations ------------------------------------------------------
    def at_head(self) -> bool:
        """Whether the schema is at the newest revision (a cheap check: alembic, which costs
        a command a fifth of a second to import, is loaded only when there is work to do)."""
        newest = max(f.name.split("_", 1)[0] for f in (MIGRATIONS / "versions").glob("[0-9]*_*.py"))
        try:
            with self.engine.connect() as conn:
                return conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == newest
        except Exception:  # no table yet, or any doubt: let alembic decide
            return False

    def migrate(self) -> None:
        """Bring the schema to the newest revision; safe to run from several replicas at once."""
        if self.at_head():
            return
        from alembic import command
        from alembic.config import Config as AlembicConfig

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.connect() as conn:
            if self.is_postgres:
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
                conn.commit()
            try:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                conn.commit()
            finally:
                if self.is_postgres:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_MIGRATION_LOCK})
                    conn.commit()


def in_pairs(conn: Connection, a, b, pairs) -> ColumnElement:
    """``(a, b) IN pairs``, written so that each dialect answers it with index searches.

    PostgreSQL plans a row-value IN list on a composite index. SQLite plans one as a scan of
    the whole table (200 pairs against 113,000 layer links: 47 ms, growing with the store);
    given the pairs as one JSON parameter read by ``json_each`` it searches the index (2.5
    ms), and the statement costs nothing to build (an OR of 200 ANDs costs SQLAlchemy 50 ms).
    """
    pairs = list(pairs)
    if conn.dialect.name != "sqlite":
        return tuple_(a, b).in_(pairs)
    value = literal_column("value")
    rows = (select(func.json_extract(value, "$[0]"), func.json_extract(value, "$[1]"))
            .select_from(func.json_each(bindparam(None, json.dumps(pairs), unique=True))))
    return tuple_(a, b).in_(rows)


def insert_ignore(conn: Connection, table, values: dict | list[dict]) -> list:
    """INSERT ... ON CONFLICT DO NOTHING, on either dialect; returns the primary keys of the
    rows it inserted (rowcount is not reliable for this statement on every driver)."""
    name = conn.dialect.name
    if name == "postgresql":
        stmt = postgresql.insert(table).on_conflict_do_nothing()
    elif name == "sqlite":
        stmt = sqlite.insert(table).on_conflict_do_nothing()
    else:  # pragma: no cover
        raise NotImplementedError(name)
    stmt = stmt.returning(*table.primary_key.columns)
    if isinstance(values, list):
        if not values:
            return []
        return list(conn.execute(stmt, values).all()) if len(values) > 1 else list(conn.execute(stmt, values[0]).all())
    return list(conn.execute(stmt, values).all())
