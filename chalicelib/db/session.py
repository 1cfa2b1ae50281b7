"""Engine and unit of work. One engine per container, one session per invocation."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, *, pool_size: int = 5, max_overflow: int = 5, pool_timeout: float = 10.0,
                pool_recycle: int = 3600, connect_timeout: int = 5, ping_idle_seconds: float = 1.0) -> Engine:
    """Build an engine for Postgres (psycopg 3) or SQLite with the same semantics.

    Postgres: a pooled connection that sat idle for `ping_idle_seconds` or more is pinged (`SELECT 1`) when it
    is checked out, and replaced if it is dead, so the first request after an outage or a frozen Lambda
    succeeds; one used moments ago is not (SQLAlchemy's `pool_pre_ping` pings on every checkout, which in a
    consumer's batch was 1.1 of its 2.4 round trips per task). `connect_timeout` bounds a connection attempt to
    a host that does not answer."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN; take control so
        # SAVEPOINTs and write locks behave like Postgres transactions.
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        pool_recycle=pool_recycle,
        # The connection returned last is handed out first: a hot path keeps reusing one (never idle, never
        # pinged) while the rest of the pool idles, instead of rotating through all of them.
        pool_use_lifo=True,
        connect_args={"connect_timeout": connect_timeout},
    )
    IdlePing(engine, ping_idle_seconds).install()
    return engine


#: where a pooled connection's record keeps the time it was last returned to the pool.
_RETURNED_AT = "ymera_returned_at"


class IdlePing:
    """Pre-ping only connections that were idle: a checkout after `idle_seconds` in the pool sends `SELECT 1`
    first, and a connection that fails it is replaced by the pool (DisconnectionError: SQLAlchemy retries the
    checkout on a new connection). A new connection is never pinged, like `pool_pre_ping`'s "fresh" rule."""

    def __init__(self, engine: Engine, idle_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.engine, self.idle_seconds, self.clock = engine, idle_seconds, clock
        self.pings = 0
        # Each instance keeps its own mark: two on one pool (make_engine's and another with its own clock or
        # threshold) must not read each other's times.
        self._key = (_RETURNED_AT, id(self))

    def install(self) -> None:
        event.listen(self.engine.pool, "checkin", self._returned)
        event.listen(self.engine.pool, "checkout", self._checkout)

    def _returned(self, _dbapi_conn: Any, record: Any) -> None:
        if record is not None:
            record.info[self._key] = self.clock()

    def _checkout(self, dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        returned_at = record.info.get(self._key)
        if returned_at is None or self.clock() - returned_at < self.idle_seconds:
            return  # new, or used moments ago
        self.pings += 1
        dialect = self.engine.dialect
        try:
            dialect.do_ping(dbapi_conn)
        except dialect.loaded_dbapi.Error as err:
            if dialect.is_disconnect(err, dbapi_conn, None):
                raise exc.DisconnectionError(f"idle connection failed its ping: {err}") from err
            raise


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # autocommit at the driver; SQLAlchemy emits BEGIN
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


class Database:
    """Owns the engine and hands out sessions; passed to services as a dependency."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._factory = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def transaction(self, connection: Connection | None = None) -> Iterator[Session]:
        """A session inside one transaction: committed on success, rolled back on error.

        With `connection` (from `connection()`), the session uses it and leaves it checked out after
        the commit, for a statement that must follow the commit without a second pool checkout."""
        factory = self._factory if connection is None else functools.partial(self._factory, bind=connection)
        with factory() as session, session.begin():
            yield session

    @contextmanager
    def statements(self) -> Iterator[Connection]:
        """A Core connection inside one transaction (committed on success): for hot paths that only run
        statements and need none of the ORM unit of work (the consumer's claim and outcome)."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def statement(self) -> Iterator[Connection]:
        """A Core connection for ONE writing statement that is its own transaction (Postgres autocommit): the
        statement commits when it completes, atomically, triggers included, with the same WAL flush as a
        COMMIT, and the BEGIN and COMMIT round trips are not sent. `commit()` at the end is SQLAlchemy's (its
        commit event fires); the driver has nothing left to commit. Never for two statements that must
        commit together: use `statements()`."""
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            yield conn
            conn.commit()

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """One pool checkout, held for a `transaction(connection)` and what follows it."""
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reads only (no commit)."""
        with self._factory() as session:
            yield session

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name


def rowcount(result: Any) -> int:
    """Rows matched by an UPDATE/DELETE (session.execute is typed as Result, which hides it)."""
    return int(result.rowcount)
