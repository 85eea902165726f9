"""Engine set-up, transactions and migrations, for SQLite and PostgreSQL alike.

``Database.write()`` is one write transaction (on SQLite ``BEGIN IMMEDIATE``, so two
writers queue instead of failing on a lock upgrade; dockyard's own writers queue on a lock
first, see :class:`_SqliteWriterLock`); ``Database.read()`` is a read
transaction. Both commit on success and roll back on an exception. Never hold one
open while streaming blob bytes.

Database faults leave this module as domain errors (the boundary for SQLAlchemy errors)::

    RegistryError("UNAVAILABLE")  (api/errors.py: 503 + Retry-After, one log line)
      DatabaseUnavailable         cannot connect, connection lost, read-only, disk full
        DatabaseConflict          deadlock (40P01) or serialization failure (40001): the
                                  transaction was rolled back and may simply run again

Anything else (an integrity error, bad SQL) is a bug and stays a 500.
:func:`retrying` runs a unit of work again after a conflict, as long as none of its
transactions has committed yet.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import logging
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from sqlalchemy import (ColumnElement, Connection, Engine, bindparam, create_engine, event, func, literal_column,
                        select, text, tuple_)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from dockyard.errors import Unavailable
from dockyard.meta.walsync import WalSync

log = logging.getLogger(__name__)
T = TypeVar("T")
MIGRATIONS = Path(__file__).with_name("migrations")
_PG_MIGRATION_LOCK = 0x646F636B  # "dock"


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):  # pragma: no cover - exercised by every sqlite test
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # NORMAL: COMMIT writes the log without syncing it; Database.write() syncs it after
        # the write lock is released and before it returns, one sync for every commit that
        # finished meanwhile (walsync.py), so a 2xx survives a power loss as with FULL
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        # straight on the driver's connection: a full SQLAlchemy execute (events, a result
        # object) for BEGIN was a third of the statement overhead of a push's transactions
        statement = "BEGIN IMMEDIATE" if conn.get_execution_options().get("dockyard_write", False) else "BEGIN"
        try:
            conn.connection.driver_connection.execute(statement)
        except sqlite3.Error as exc:  # the same wrapper an execute would give (busy, read-only, I/O)
            raise sa_exc.DBAPIError.instance(statement, (), exc, sqlite3.Error) from exc


RETRY_AFTER_SECONDS = 5
RETRY_ATTEMPTS = 5
_CONFLICT_STATES = ("40P01", "40001")  # deadlock_detected, serialization_failure
# connection exceptions, insufficient resources (disk full), operator intervention, read-only
_UNAVAILABLE_STATES = ("08", "53", "57P", "25006")


class DatabaseUnavailable(Unavailable):
    """The database cannot do the work now; the same request later may succeed."""

    def __init__(self, reason: str):
        super().__init__("the registry's database is unavailable; retry later", RETRY_AFTER_SECONDS)
        self.reason = reason

    @property
    def disk_full(self) -> bool:
        """SQLite's SQLITE_FULL or PostgreSQL's disk_full (53100)."""
        return "disk is full" in self.reason or "53100" in self.reason or "No space left" in self.reason


class DatabaseConflict(DatabaseUnavailable):
    """The transaction lost a deadlock or a serialization check and was rolled back."""


def _translate(exc: sa_exc.DBAPIError) -> DatabaseUnavailable | None:
    orig = exc.orig
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or ""
    reason = (str(orig) or type(orig).__name__).strip().splitlines()[0]
    if state in _CONFLICT_STATES:
        return DatabaseConflict(reason)
    if exc.connection_invalidated or isinstance(exc, sa_exc.OperationalError) or state.startswith(
            _UNAVAILABLE_STATES):
        return DatabaseUnavailable(reason)  # SQLite: locked, read-only, disk full, cannot open
    return None


@contextlib.contextmanager
def _database_faults() -> Iterator[None]:
    try:
        yield
    except sa_exc.DBAPIError as exc:
        fault = _translate(exc)
        if fault is None:
            raise
        raise fault from exc
    except sa_exc.TimeoutError as exc:  # no pooled connection came free in time: busy, not broken (a 503)
        raise DatabaseUnavailable(f"no database connection free: {exc}") from exc


_unit = threading.local()  # per thread: has a transaction of the current unit of work committed?


def retrying(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, run again (at most :data:`RETRY_ATTEMPTS` times in all, with
    a short random pause) when a transaction of it fails with a deadlock or serialization
    failure before any of its transactions committed: the failed one was rolled back, so
    the retry starts from the same database state (services move or delete storage data
    only after a commit). A conflict after a commit, or the last one, is raised (a 503).
    Runs in the calling thread; the HTTP layer runs every service call through it."""
    attempts = RETRY_ATTEMPTS
    outer = getattr(_unit, "committed", None)  # a unit inside a unit (a job run by a request)
    try:
        for attempt in range(1, attempts + 1):
            _unit.committed = False
            try:
                return fn(*args, **kwargs)
            except DatabaseConflict as exc:
                if _unit.committed or attempt == attempts:
                    raise
                log.info("transaction conflict (%s); running it again (attempt %d)", exc.reason, attempt + 1)
                time.sleep(random.uniform(0.01, 0.05) * attempt)
    finally:  # what this unit committed, the enclosing one committed too
        _unit.committed = None if outer is None else (outer or bool(_unit.committed))
    raise AssertionError("unreachable")


def _mark_committed() -> None:
    if getattr(_unit, "committed", None) is not None:
        _unit.committed = True


class _SqliteWriterLock:
    """The turn of one SQLite writer: the threads of this process queue on a lock, and the
    processes sharing the file (``workers`` > 1, the CLI) on an ``flock`` of ``<db>.writer``,
    so a writer waits in the kernel and wakes when the previous one commits, instead of
    polling in SQLite's busy handler, which sleeps up to 100 ms between tries (16 threads
    pushing small blobs spent a fifth of their time asleep while the database was free).
    Only a queue: ``BEGIN IMMEDIATE`` still decides who writes, so any other SQLite client
    (or a forked child sharing the descriptor) is still correct, meeting ours in the busy
    handler as before. Re-entrant in a thread (a write opened inside a write gets SQLite's
    own answer, as it did before)."""

    def __init__(self, path: str | None):
        self._lock = threading.RLock()
        self._path = f"{path}.writer" if path else None
        self._fd: int | None = None
        self._depth = 0

    def __enter__(self) -> None:
        self._lock.acquire()
        if self._path is None:
            return
        try:
            if self._depth == 0:
                if self._fd is None:
                    try:
                        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
                    except OSError as exc:  # a read-only directory: SQLite's own answer will do
                        log.warning("cannot open %s (%s); writers of other processes meet in SQLite's "
                                    "busy handler", self._path, exc.strerror or exc)
                        self._path = None
                        return
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            self._depth += 1
        except BaseException:
            self._lock.release()
            raise

    def held_by_me(self) -> bool:
        return self._lock._is_owned()

    def __exit__(self, *exc) -> None:
        try:
            if self._path is not None:
                self._depth -= 1
                if self._depth == 0:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._lock.release()


class _Member:
    """One body of a group transaction (:meth:`Database.run`)."""
    __slots__ = ("done", "error", "fn", "result", "ticket")

    def __init__(self, fn: Callable[[Connection], Any]):
        self.fn = fn
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.ticket = 0


class _Aborted(Exception):
    """A body of a group raised: the group's transaction is rolled back and runs again without it."""


def _raw(raw: sqlite3.Connection, statement: str, params: Any = ()) -> sqlite3.Cursor:
    """A statement straight on SQLite's driver connection, its errors those an execute would
    give (so :func:`_database_faults` translates them)."""
    try:
        return raw.execute(statement, params)
    except sqlite3.Error as exc:
        raise sa_exc.DBAPIError.instance(statement, params, exc, sqlite3.Error) from exc


def driver_execute(conn: Connection, statement: str, params: Any = ()) -> sqlite3.Cursor:
    """``statement`` (SQL text with ``?`` or ``:name`` parameters) on the SQLite driver's
    connection under ``conn``, inside ``conn``'s transaction, without SQLAlchemy's execute
    (events, compilation cache lookup, a result object: about 100 us of Python per statement,
    which the push path and the collector pay inside the writer's turn). For fixed hot
    statements only; the rows come back as the driver gives them (no type processing: no
    SQLAlchemy ``DateTime``/``JSON``/``Boolean`` conversion). SQLite only: PostgreSQL callers
    keep their SQLAlchemy statement."""
    return _raw(conn.connection.driver_connection, statement, params)


DRIVER_STATEMENTS = True
"""Whether the stores run their fixed hot statements straight on SQLite's driver
(:func:`driver_execute`); tests switch it off to compare them with the SQLAlchemy statements."""


def on_driver(conn: Connection) -> bool:
    """Whether ``conn``'s fixed hot statements go to :func:`driver_execute` (SQLite) rather than
    through SQLAlchemy (PostgreSQL, or :data:`DRIVER_STATEMENTS` off)."""
    return DRIVER_STATEMENTS and conn.dialect.name == "sqlite"


def _group_failed(exc: BaseException) -> Exception:
    """The error a member of a group gets when something else ended the group's transaction."""
    if isinstance(exc, DatabaseUnavailable):
        fault = DatabaseUnavailable(exc.reason)
    else:
        fault = DatabaseUnavailable(f"the shared transaction failed: {type(exc).__name__}: {exc}")
    fault.__cause__ = exc
    return fault


_in_group = threading.local()  # this thread is running the bodies of a group
GROUP_LIMIT = 64  # bodies in one group transaction at most


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
            on_disk = bool(path) and path != ":memory:"
            self._writer = _SqliteWriterLock(path if on_disk else None)
            self.wal_sync: WalSync | None = WalSync(path) if on_disk else None
        else:
            # a server shared by replicas: keep each process's share of max_connections modest
            self.engine = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
            self._writer = contextlib.nullcontext()
            self.wal_sync = None  # the server syncs its own commits
        self.dialect = self.engine.dialect.name
        self._group_cond = threading.Condition()
        self._group_pending: list[_Member] = []
        self._group_running = False
        self.turns = 0  # write transactions begun by this process (writer turns, on SQLite)
        self.groups = 0  # group transactions run (bodies / groups = the group size)
        self.bodies = 0  # bodies run in group transactions
        self.turn_seconds = 0.0  # time spent holding the writer's turn (BEGIN to COMMIT)
        self.turn_cpu_seconds = 0.0  # CPU time of the threads holding it, meanwhile

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    on_disk_full: Callable[[str], Any] | None = None
    """Called when a write fails because the database's disk is full (the server releases
    its disk reserve, so reclamation can proceed)."""

    @contextlib.contextmanager
    def write(self, *, sync: bool = True) -> Iterator[Connection]:
        """One write transaction (on SQLite, after this process's turn: :class:`_SqliteWriterLock`;
        the connection is taken from the pool before the turn, so the turn is only the
        transaction). On exit the commit is on disk. ``sync=False`` (SQLite) skips waiting
        for that, for a transaction nobody is told about: the log is synced in commit order,
        so the synced commit that precedes the next acknowledgement makes it durable too
        (an upload's claim, renewed while bytes stream, is such a step)."""
        try:
            with _database_faults(), self.engine.connect() as conn, self._writer:
                conn = conn.execution_options(dockyard_write=True)
                self.turns += 1
                began, cpu = time.perf_counter(), time.thread_time()
                try:
                    with conn.begin():
                        yield conn
                finally:
                    self.turn_seconds += time.perf_counter() - began
                    self.turn_cpu_seconds += time.thread_time() - cpu
        except DatabaseUnavailable as exc:
            if exc.disk_full and self.on_disk_full is not None:
                self.on_disk_full(exc.reason)
            raise
        _mark_committed()
        if sync and self.wal_sync is not None:
            self._synced()

    def run(self, fn: Callable[[Connection], T], *, sync: bool = True) -> T:
        """``fn(conn)`` in a write transaction, as ``with write(sync=sync) as conn: return fn(conn)``,
        except that on SQLite the bodies that concurrent threads of this process hand in
        meanwhile share one transaction, so N requests pay one writer's turn (``BEGIN
        IMMEDIATE``, the lock, ``COMMIT``) instead of N.

        Group commit: if no group is running, this thread runs one with every body queued
        so far (at most :data:`GROUP_LIMIT`), else it waits for the running group to end
        and then for the group that holds its body, so nothing waits for company. The bodies
        run one after the other (serial semantics: each sees what the earlier ones wrote); a
        body that raises is rolled back alone and its caller gets its error: the group's
        transaction is rolled back and runs again without it (:meth:`_run_bodies`), so a
        body may run more than once before the one run that commits. The call returns once
        the shared ``COMMIT`` is done and, with ``sync``, on disk. Bodies must be short,
        touch only the database, may be run again, and return plain values (they may run in
        another request's thread: no thread-local state, no waiting on other requests, no
        result read after the commit). A ``run`` inside a body (or inside ``write``) is an ordinary
        nested ``write``. PostgreSQL: an ordinary ``write`` (its writers do not queue on
        one lock; each keeps its own transaction, deadlock retries and row locks)."""
        if self.wal_sync is None or getattr(_in_group, "active", False) or self._writer_held():
            with self.write(sync=sync) as conn:
                return fn(conn)
        member = _Member(fn)
        cond = self._group_cond
        with cond:
            self._group_pending.append(member)
            while not member.done:
                if self._group_running:
                    cond.wait()
                    continue
                self._group_running = True
                group, self._group_pending = self._group_pending[:GROUP_LIMIT], self._group_pending[GROUP_LIMIT:]
                cond.release()
                try:
                    self._run_group(group)
                finally:
                    cond.acquire()
                    self._group_running = False
                    for m in group:
                        m.done = True
                    cond.notify_all()
        if member.error is not None:
            raise member.error
        _mark_committed()
        if sync:
            try:
                self.wal_sync.wait(member.ticket)
            except OSError as exc:  # committed, but not known durable: the caller must not answer 2xx
                log.error("cannot sync the database log %s: %s", self.wal_sync.path, exc)
                raise DatabaseUnavailable(f"sync of the database log failed: {exc.strerror or exc}") from exc
        return member.result

    def _writer_held(self) -> bool:
        """Whether this thread is inside a ``write`` already (its ``run`` must not wait for a group)."""
        held = getattr(self._writer, "held_by_me", None)
        return held() if held is not None else False

    def _run_group(self, group: list[_Member]) -> None:
        """Run the bodies of ``group`` in one transaction (the leader's thread); every member
        gets its result or its error, and the commit's ticket."""
        _in_group.active = True
        try:
            with _database_faults(), self.engine.connect() as conn, self._writer:
                conn = conn.execution_options(dockyard_write=True)
                self.turns += 1
                self.groups += 1
                self.bodies += len(group)
                began, cpu = time.perf_counter(), time.thread_time()
                try:
                    self._run_bodies(conn, group)
                finally:
                    self.turn_seconds += time.perf_counter() - began
                    self.turn_cpu_seconds += time.thread_time() - cpu
            if self.wal_sync is not None:
                ticket = self.wal_sync.committed()
                for m in group:
                    m.ticket = ticket
        except BaseException as exc:
            if isinstance(exc, DatabaseUnavailable) and exc.disk_full and self.on_disk_full is not None:
                self.on_disk_full(exc.reason)
            # every other member gets its own error (not one object raised in many threads),
            # a 503 whatever ended the group (an OSError of the writer's flock, a body's
            # BaseException): nothing of the group committed
            for m in group:
                if m.error is None:
                    m.error = _group_failed(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            _in_group.active = False

    def _run_bodies(self, conn: Connection, group: list[_Member]) -> None:
        """The group's transaction, under the writer's turn: the bodies one after the other,
        then COMMIT. No savepoint per body on the first pass (each is a call into SQLite,
        which releases the GIL: as many as the BEGIN/COMMIT pairs the group saves): when a
        body raises, the whole transaction is rolled back, that body keeps its error, and
        the group runs again without it, so the bodies before it run twice and commit once,
        in the same order (rare: a push that loses a race, a bad request). That second pass
        runs each body in its own ``SAVEPOINT``, so further failing bodies are rolled back
        alone and a group is replayed once, not once per failing body (a client retrying a
        bad push must not multiply the work of everyone else's)."""
        pending = list(group)
        savepoints = False
        raw = conn.connection.driver_connection
        while pending:
            failed = -1
            try:
                with conn.begin():
                    for i, m in enumerate(pending):
                        if savepoints:
                            _raw(raw, "SAVEPOINT dockyard_body")
                        try:
                            with _database_faults():
                                m.result = m.fn(conn)
                        except Exception as exc:  # this body fails alone; the others run again without it
                            m.error, failed = exc, i
                            if not savepoints or not raw.in_transaction:  # (an error that ended SQLite's transaction)
                                raise _Aborted(str(exc)) from exc
                            m.result = None
                            _raw(raw, "ROLLBACK TO dockyard_body")
                        if savepoints:
                            _raw(raw, "RELEASE dockyard_body")
                    if savepoints:
                        pending = [m for m in pending if m.error is None]
            except _Aborted:
                error = pending[failed].error
                if isinstance(error, DatabaseUnavailable) and error.disk_full and self.on_disk_full:
                    self.on_disk_full(error.reason)
                pending = [m for m in pending if m.error is None]
                for m in pending:
                    m.result = None
                savepoints = True
                continue
            return

    def sync(self) -> None:
        """Make every commit of this process so far durable: for a unit of work whose
        transactions ran with ``write(sync=False)`` and whose outcome is about to be
        acknowledged (a no-op where commits are durable by themselves: PostgreSQL)."""
        if self.wal_sync is not None:
            self._synced()

    def _synced(self) -> None:
        """Wait until the commit that just returned is on disk (group commit, walsync.py)."""
        try:
            self.wal_sync.commit()
        except OSError as exc:  # committed, but not known durable: the caller must not answer 2xx
            log.error("cannot sync the database log %s: %s", self.wal_sync.path, exc)
            raise DatabaseUnavailable(f"sync of the database log failed: {exc.strerror or exc}") from exc

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        with _database_faults(), self.engine.connect() as conn:
            if self.wal_sync is None:
                with conn.begin():
                    yield conn
                return
            sqlite_conn = conn.connection.driver_connection
            changes = sqlite_conn.total_changes
            with conn.begin():
                yield conn
            wrote = sqlite_conn.total_changes != changes
        if wrote:  # a read that wrote after all is made as durable as a write
            self._synced()

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


def pairs_in(dialect: str, a, b, name: str) -> ColumnElement:
    """:func:`in_pairs` with the pairs as the bound parameter ``name`` (give it
    :func:`pairs_value`): for a statement built once (:func:`cached_statement`)."""
    if dialect != "sqlite":
        return tuple_(a, b).in_(bindparam(name, expanding=True))
    value = literal_column("value")
    rows = (select(func.json_extract(value, "$[0]"), func.json_extract(value, "$[1]"))
            .select_from(func.json_each(bindparam(name))))
    return tuple_(a, b).in_(rows)


def pairs_value(dialect: str, pairs) -> Any:
    """The value of a :func:`pairs_in` parameter."""
    return json.dumps(list(pairs)) if dialect == "sqlite" else [tuple(p) for p in pairs]


_statements: dict[tuple, Any] = {}


def cached_statement(key: tuple, build: Callable[[], T]) -> T:
    """A statement built once per ``key`` (include the dialect and the table): a statement
    construct is immutable, and one built once has its SQLAlchemy cache key memoized, so the
    hot paths skip both on every call. Values always go in as parameters."""
    stmt = _statements.get(key)
    if stmt is None:
        stmt = _statements.setdefault(key, build())
    return stmt


def dialect_insert(dialect: str, table):
    """The INSERT of ``dialect`` that has ``ON CONFLICT`` (PostgreSQL or SQLite), its module
    imported on first use: the PostgreSQL dialect package costs a SQLite process (every
    ``dockyard`` command) 30-50 ms to import, for nothing."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    if dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table)
    raise NotImplementedError(dialect)  # pragma: no cover


def insert_ignore(conn: Connection, table, values: dict | list[dict]) -> list:
    """INSERT ... ON CONFLICT DO NOTHING, on either dialect; returns the primary keys of the
    rows it inserted (rowcount is not reliable for this statement on every driver)."""
    name = conn.dialect.name

    def build():
        return dialect_insert(name, table).on_conflict_do_nothing().returning(*table.primary_key.columns)

    stmt = cached_statement(("insert_ignore", name, table), build)
    if isinstance(values, list):
        if not values:
            return []
        return list(conn.execute(stmt, values).all()) if len(values) > 1 else list(conn.execute(stmt, values[0]).all())
    return list(conn.execute(stmt, values).all())


def safe_url(url: str) -> str:
    """The database URL with its password hidden, for messages."""
    return make_url(url).render_as_string(hide_password=True)


def is_database_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the database failing (for start-up messages without a traceback)."""
    return isinstance(exc, (sa_exc.SQLAlchemyError, DatabaseUnavailable))
