"""A transaction's statements sent several per round trip (psycopg's pipeline mode), for the hottest write path.

SQLAlchemy sends a statement, waits for its answer, and psycopg sends `BEGIN` and `COMMIT` as round trips of their
own: a `POST /tasks` took five (BEGIN, the lane and quota read, the INSERT, COMMIT, then the publish mark). The
INSERT's trigger locks the owner's event counter row until COMMIT (chalicelib/events/triggers.py), so the round
trip between the INSERT and its COMMIT is time every other write of that owner waits — on AWS as much as locally,
where the API's thread must also win its interpreter lock back before it can send COMMIT. `Pipelined` sends
`BEGIN` with the first statement and `COMMIT` with the last: two round trips, the lock held for the INSERT's own
execution and the commit's WAL flush only.

The statements are the Core statements the ORM path runs, compiled once for the driver (`DriverStatement`: the
same SQL, the same bind processors). The engine's `before_cursor_execute` listeners see them as they see
SQLAlchemy's own (with no execution context: None), its `commit` listeners the COMMIT, and a driver error is
raised as SQLAlchemy's DBAPIError (the connection invalidated when the driver lost it), so a Postgres outage is
the same 503 (chalicelib/api/http.py) on either path.
Postgres and psycopg only: callers check `supported(dialect)` and take the ORM path otherwise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler


class DriverStatement:
    """`stmt` compiled once for `dialect`: its SQL text (IN lists of fixed values expanded, as SQLAlchemy expands
    them per execution), the values it fixes, and SQLAlchemy's bind processors (JSON serialisation, aware
    datetimes, ...) for the values a call binds: every bind parameter created without a value."""

    def __init__(self, stmt: ClauseElement, dialect: Dialect) -> None:
        compiled = stmt.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        self.required = frozenset(b.key for b in compiled.binds.values() if b.required)
        state = compiled.construct_expanded_state(dict.fromkeys(self.required))
        self.sql: str = state.statement
        self._processors: dict[str, Callable[[Any], Any]] = {
            name: fn for name, fn in compiled._bind_processors.items() if callable(fn)}
        self._fixed = {name: self._processed(name, value) for name, value in state.parameters.items()
                       if name not in self.required}

    def _processed(self, name: str, value: Any) -> Any:
        fn = self._processors.get(name)
        return value if fn is None else fn(value)

    def parameters(self, values: Mapping[str, Any]) -> dict[str, Any]:
        missing = self.required.difference(values)
        if missing:
            raise sa.exc.InvalidRequestError(f"no value for bind parameters {sorted(missing)}")
        params = dict(self._fixed)
        params.update((name, self._processed(name, value)) for name, value in values.items())
        return params


def supported(dialect: Dialect) -> bool:
    return bool(dialect.name == "postgresql" and dialect.driver == "psycopg")


class Pipelined:
    """One transaction on `conn`'s psycopg connection, its statements queued and sent together:

        with Pipelined(conn) as tx:
            row = tx.first(read, values)   # BEGIN and the read: one round trip
            tx.execute(write, values)      # queued
            tx.commit()                    # the writes and COMMIT: one round trip, as the block ends

    psycopg would send its own BEGIN as a round trip of its own (and wait for it, even in pipeline mode): the
    connection is put in autocommit for the block and the transaction's BEGIN and COMMIT are statements in the
    pipeline. A block left by an exception, or without `commit()`, is rolled back; the connection leaves the
    block as it came (not in autocommit, no transaction open), or is invalidated if the driver lost it."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.raw: Any = conn.connection.driver_connection
        self._events = conn._has_events or conn.engine._has_events
        self._driver_error: type[Exception] = conn.dialect.loaded_dbapi.Error
        self._entered: Any = None  # the driver's pipeline() context, and its Pipeline
        self._pipeline: Any = None
        self._committing = False
        self._last: tuple[str, dict[str, Any]] = ("BEGIN", {})

    def __enter__(self) -> Pipelined:
        if self.raw.info.transaction_status != 0:
            raise sa.exc.InvalidRequestError("Pipelined needs a connection with no transaction open")
        try:
            with self._driver_errors():
                self.raw.autocommit = True
                self._entered = self.raw.pipeline()
                self._pipeline = self._entered.__enter__()
                self.raw.cursor().execute("BEGIN")  # a pipeline may already send (and fail) here
        except BaseException:
            self._abandon()
            raise
        return self

    def first(self, stmt: DriverStatement, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """Send what is queued and `stmt` (one round trip) and return `stmt`'s first row."""
        cursor = self._queue(stmt, values)
        with self._driver_errors():
            self._pipeline.sync()
            row = cursor.fetchone()
        if row is None:
            raise sa.exc.NoResultFound("the statement returned no row")
        return tuple(row)

    def execute(self, stmt: DriverStatement, values: Mapping[str, Any]) -> None:
        """Queue `stmt`: it goes with the next round trip (`first`, or the block's end)."""
        self._queue(stmt, values)

    def commit(self) -> None:
        """Queue COMMIT: the block's end sends it with what is queued and waits for it."""
        with self._driver_errors():
            self.raw.cursor().execute("COMMIT")
        self._committing = True

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if kind is not None or not self._committing:  # nothing of it may commit
            self._abandon()
            return
        try:
            with self._driver_errors():
                self._entered.__exit__(None, None, None)  # Sync: the writes and COMMIT
        except BaseException:
            self._restore()
            raise
        self._restore()
        if self._events:
            self.conn.dispatch.commit(self.conn)

    def _queue(self, stmt: DriverStatement, values: Mapping[str, Any]) -> Any:
        sql, params = stmt.sql, stmt.parameters(values)
        cursor = self.raw.cursor()
        if self._events:
            for fn in self.conn.dispatch.before_cursor_execute:
                changed = fn(self.conn, cursor, sql, params, None, False)
                if changed is not None:  # a listener registered with retval=True
                    sql, params = changed
        self._last = (sql, params)
        with self._driver_errors():
            cursor.execute(sql, params)
        return cursor

    def _abandon(self) -> None:
        """Leave the pipeline (if it was entered), then roll back whatever of the transaction reached the server."""
        if self._pipeline is not None:
            with contextlib.suppress(Exception):  # an aborted pipeline raises the caller's error again: theirs stands
                self._entered.__exit__(None, None, None)
        self._restore()

    def _restore(self) -> None:
        """The connection as it came: no transaction open, not in autocommit; invalidated if that fails."""
        try:
            if self.raw.info.transaction_status != 0:  # not idle: a transaction the block could not finish
                self.raw.execute("ROLLBACK")
            self.raw.autocommit = False
        except Exception as exc:  # noqa: BLE001 - a connection we cannot put back in order is not reused
            self.conn.invalidate(exc)

    @contextmanager
    def _driver_errors(self) -> Iterator[None]:
        """A driver error as SQLAlchemy's DBAPIError (for the message: the last statement queued)."""
        try:
            yield
        except self._driver_error as exc:
            lost = bool(self.raw.closed or self.raw.broken)
            if lost:
                self.conn.invalidate(exc)
            sql, params = self._last
            raise sa.exc.DBAPIError.instance(sql, params, exc, self._driver_error, hide_parameters=True,
                                             connection_invalidated=lost, dialect=self.conn.dialect) from exc
