"""One engine per process, SQLite tuned for a writer beside many readers, and write transactions."""

import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
)

from finance_core.settings import SettingsError
from finance_core.store import files

SQLITE_BUSY_TIMEOUT_MS = 30_000
WRITE_OPTION = "finance_write"
# SQLite has one writer at a time: threads of one process queue on a lock instead of
# polling the file lock, which keeps write latency flat under concurrent requests.
_sqlite_write_locks: WeakKeyDictionary[Engine, threading.Lock] = WeakKeyDictionary()
# PostgreSQL's writers, in every process, take this transaction-level advisory lock before
# anything else: the one lock order of SPEC 20. Batches of different listeners touch the same
# count and history rows in whatever order their deliveries came; holding those row locks in
# varying orders deadlocked them. The key is any constant no other application uses ("pmfw").
WRITERS_LOCK_KEY = 0x706D6677
_TAKE_WRITERS_LOCK = text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=WRITERS_LOCK_KEY)


def make_engine(database_url: str, **engine_options: Any) -> Engine:
    """Create the process's engine; SQLite files get WAL, a busy timeout and explicit BEGINs.

    A URL SQLAlchemy cannot use (no such dialect, its driver not installed, not a URL) is a
    SettingsError naming DATABASE_URL, without its password. Nothing connects yet.
    """
    try:
        url = make_url(database_url)
    except ArgumentError:
        raise SettingsError(
            "DATABASE_URL is not a database URL such as sqlite:///data/finance.db or "
            "postgresql+psycopg://user:password@host/dbname"
        ) from None
    if url.get_backend_name() != "sqlite":
        engine_options.setdefault("pool_pre_ping", True)
        return _create(url, engine_options)

    database = Path(url.database) if url.database and url.database != ":memory:" else None
    if database is not None and not database.parent.exists():
        # Created here, the directory is ours alone; an existing one is the operator's choice.
        database.parent.mkdir(parents=True, exist_ok=True, mode=files.DIRECTORY_MODE)
    engine = _create(url, engine_options)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from pysqlite so that BEGIN is ours (see _begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if database is not None:
            # Before WAL: SQLite creates -wal and -shm with the database file's mode.
            files.private_sqlite_files(database)
        _enable_wal(cursor)
        # NORMAL is durable across application crashes in WAL mode; only an OS crash
        # can lose the last commits, and Stripe redelivers anything not acknowledged.
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # Writers take the write lock up front, so the busy timeout applies and a
        # read-then-write transaction can never fail half way with "database is locked".
        # Readers begin deferred and never wait for a writer in WAL mode.
        # On the driver: SQLAlchemy's execution machinery would cost more than the BEGIN.
        execute_on_driver(
            conn, "BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE_OPTION) else "BEGIN"
        )

    _sqlite_write_locks[engine] = threading.Lock()
    return engine


def _create(url: URL, engine_options: dict[str, Any]) -> Engine:
    try:
        return create_engine(url, **engine_options)
    except (NoSuchModuleError, ImportError) as exc:
        raise SettingsError(
            f"DATABASE_URL {url.render_as_string(hide_password=True)} cannot be used: {exc} "
            "(postgresql+psycopg://... for PostgreSQL, sqlite:///path for SQLite)"
        ) from None


def execute_on_driver(conn: Connection, sql: str, params: Mapping[str, Any] | None = None) -> Any:
    """Run SQL on the connection's DBAPI connection, skipping SQLAlchemy's execution machinery.

    Returns the DBAPI cursor. A driver error is raised as SQLAlchemy's `DBAPIError` (for
    example `OperationalError` for a database still locked after the busy timeout), like any
    other query's, without the parameters in its message.
    """
    driver: Any = conn.connection.driver_connection
    try:
        return driver.execute(sql) if params is None else driver.execute(sql, params)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise _as_sqlalchemy_error(conn, exc, sql, params) from exc


def _as_sqlalchemy_error(
    conn: Connection, exc: Exception, sql: str | None, params: Mapping[str, Any] | None
) -> DBAPIError:
    """A driver error as SQLAlchemy raises it (OperationalError, IntegrityError, ...)."""
    dialect = conn.dialect
    error = DBAPIError.instance(
        sql, params, exc, dialect.loaded_dbapi.Error, hide_parameters=True, dialect=dialect
    )
    # instance() gives a StatementError only for an exception outside the DBAPI's hierarchy,
    # and the callers pass only the driver's own errors.
    assert isinstance(error, DBAPIError)
    return error


@contextmanager
def pipeline(conn: Connection) -> Iterator[None]:
    """On PostgreSQL, statements go out without waiting for each answer until a result is read.

    psycopg's pipeline mode: a batch of writes costs a few round trips instead of one or two
    per event. A server error comes out at the next read or at the end of the block, as
    SQLAlchemy's `DBAPIError` like any other query's. On SQLite, which has no round trips,
    nothing changes.
    """
    if conn.dialect.name != "postgresql":
        yield
        return
    try:
        driver: Any = conn.connection.driver_connection  # a psycopg.Connection here
        with driver.pipeline():
            yield
    except conn.dialect.loaded_dbapi.Error as exc:
        raise _as_sqlalchemy_error(conn, exc, None, None) from exc


def _enable_wal(cursor: Any) -> None:
    """Switch the file to WAL (persistent), waiting out other processes doing the same.

    Changing the journal mode needs an exclusive lock, and SQLite answers "database is
    locked" at once, without the busy handler, when another connection is switching or
    starting a transaction on a file that is not in WAL yet (two processes migrating a new
    database at once). A file already in WAL is left as it is.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


# What SQLite says when the file is busy or cannot be reached, as against a wrong schema or SQL
# (also OperationalError there: "no such table").
_SQLITE_UNAVAILABLE = (
    "database is locked",
    "database table is locked",
    "unable to open database file",
    "disk i/o error",
    "database or disk is full",  # SQLITE_FULL: no page can be written until space comes back
)


def is_unavailable(exc: BaseException) -> bool:
    """Whether a database error means "cannot be reached or busy, try again later"."""
    if isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    if isinstance(exc.orig, sqlite3.Error):
        return any(message in str(exc.orig).lower() for message in _SQLITE_UNAVAILABLE)
    return True  # PostgreSQL: connection lost or refused, server shutting down, timeouts


# What PostgreSQL (or libpq) answers when the server is up but will never let these settings in:
# retrying cannot help, as against a refused TCP connection, "the database system is starting
# up" or "too many clients", which pass.
_POSTGRESQL_REFUSALS = (
    "authentication failed",  # password, peer, ident, ...
    "no password supplied",
    "no pg_hba.conf entry",
    "does not exist",  # the role or the database
    "is not permitted to log in",
    "permission denied for database",
)


def refuses_connection(exc: BaseException) -> bool:
    """Whether the database answered but refuses these credentials or this database name."""
    if not isinstance(exc, OperationalError) or isinstance(exc.orig, sqlite3.Error):
        return False
    message = str(exc.orig).lower()
    return any(refusal in message for refusal in _POSTGRESQL_REFUSALS)


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that commits on success and rolls back on error.

    One writer at a time on either database: SQLite has one by design (threads of a process
    queue on a lock, processes on BEGIN IMMEDIATE); on PostgreSQL the transaction first takes
    the writers' advisory lock, held to its end, so that writers of several listeners queue
    instead of deadlocking on the rows the count and history triggers keep.
    """
    lock = _sqlite_write_locks.get(engine) or nullcontext()
    with lock, engine.connect() as conn:
        conn.execution_options(**{WRITE_OPTION: True})
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(_TAKE_WRITERS_LOCK)
            yield conn


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection in a read-only snapshot, so that one answer sees one state."""
    with engine.connect() as conn, conn.begin():
        yield conn


@contextmanager
def statement_reads(engine: Engine) -> Iterator[Connection]:
    """A connection outside any transaction, for reads that are each one statement.

    One statement sees one state, so an answer that is one statement needs no transaction.
    On PostgreSQL the connection is in autocommit while it is out of the pool: no BEGIN and
    COMMIT, each a round trip to the server. SQLite's reads run on the driver outside a
    transaction until a BEGIN of ours, and it has no round trips to save.
    """
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # The pool sets the usual isolation back when the connection returns to it.
            conn.execution_options(isolation_level="AUTOCOMMIT")
        yield conn


@contextmanager
def snapshot(conn: Connection) -> Iterator[Connection]:
    """Several reads on a `statement_reads` connection that see one state.

    PostgreSQL's transactions see one snapshot from REPEATABLE READ on (the pool resets the
    level when the connection returns to it); SQLite's deferred BEGIN of ours is one snapshot.
    """
    if conn.dialect.name == "postgresql":
        conn.execution_options(isolation_level="REPEATABLE READ")
    with conn.begin():
        yield conn


def insert_for(conn: Connection, table: Any) -> Any:
    """An INSERT that supports ON CONFLICT on this connection's dialect."""
    return insert_for_dialect(conn.dialect.name, table)


def insert_for_dialect(dialect: str, table: Any) -> Any:
    """An INSERT that supports ON CONFLICT on the named dialect."""
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"unsupported database dialect: {dialect}")
