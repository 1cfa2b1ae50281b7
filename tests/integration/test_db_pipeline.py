"""chalicelib/db/pipeline.py against Postgres: round trips counted from libpq's own trace of the wire, what a
failed or abandoned block leaves behind, and a lost connection raised as SQLAlchemy's invalidated DBAPIError."""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import bindparam, event, insert, select, text

from chalicelib.container import Container
from chalicelib.db import pipeline
from chalicelib.db.models import OutboxMessage, Task
from chalicelib.db.session import Database
from chalicelib.db.types import utcnow
from tests.integration.conftest import Api
from tests.integration.test_api_tasks import create_task


@contextmanager
def wire(engine: Any) -> Iterator[list[list[str]]]:
    """libpq's trace of every connection checked out meanwhile: one list of (direction, message) per checkout."""
    traces: list[list[str]] = []
    files: dict[int, Any] = {}

    def checkout(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        f = tempfile.TemporaryFile()
        files[id(dbapi_conn)] = f
        dbapi_conn.pgconn.trace(f.fileno())

    def checkin(dbapi_conn: Any, _record: Any) -> None:
        f = files.pop(id(dbapi_conn), None)
        if f is None:
            return
        dbapi_conn.pgconn.untrace()
        f.seek(0)
        lines = (line.split("\t") for line in f.read().decode(errors="replace").splitlines())
        traces.append([" ".join(parts[1:2] + parts[3:5]) for parts in lines if len(parts) > 3 and parts[1] in "FB"])
        f.close()

    event.listen(engine, "checkout", checkout)
    event.listen(engine, "checkin", checkin)
    try:
        yield traces
    finally:
        event.remove(engine, "checkout", checkout)
        event.remove(engine, "checkin", checkin)


def ours(trace: list[str]) -> list[str]:
    """The trace from the request's first BEGIN: without a checkout's idle ping, were one traced (a connection idle
    for a second is pinged first, chalicelib/db/session.py)."""
    return trace[next(i for i, message in enumerate(trace) if '"BEGIN"' in message):]


def round_trips(trace: list[str]) -> int:
    """How many times the client sent and then waited for the server's answer."""
    directions = [message[0] for message in trace]
    return sum(1 for before, after in zip(directions, directions[1:], strict=False) if (before, after) == ("F", "B"))


def test_a_post_tasks_takes_three_round_trips_to_postgres(api: Api, container: Container) -> None:
    api.signup()
    agent = api.agent()
    assert create_task(api, agent["id"]).status_code == 202  # warm: the agent cached, the connection fresh
    with wire(container.db.engine) as traces:
        r = create_task(api, agent["id"])
    assert r.status_code == 202, r.json_body
    (trace,) = traces  # one checkout for the request
    trace = ours(trace)
    # BEGIN with the lane and quota read; the three rows with COMMIT; after the publish, BEGIN, the mark and
    # COMMIT. Through the ORM session the create alone took four (BEGIN, the read, the INSERT, COMMIT).
    assert round_trips(trace) == 3, trace
    sent = [m for m in trace if m.startswith("F")]
    assert sum(1 for m in sent if m.startswith("F Sync")) == 3, sent
    with container.db.read() as session:
        task = session.get(Task, uuid.UUID(r.json_body["id"]))
        assert task is not None and task.status == "queued"
        assert session.scalar(select(OutboxMessage.published_at).where(OutboxMessage.aggregate_id == task.id))


def test_the_driver_statement_binds_what_sqlalchemy_would(db: Database) -> None:
    stmt = (select(Task.id).where(Task.status.in_(["pending", "queued"]), Task.user_id == bindparam("user_id"),
                                  Task.created_at >= bindparam("since", type_=Task.__table__.c.created_at.type)))
    driver = pipeline.DriverStatement(stmt, db.engine.dialect)
    assert driver.required == {"user_id", "since"}
    assert "IN (%(status_1_1)s" in driver.sql  # the fixed IN list expanded once, not per call
    now = utcnow()
    params = driver.parameters({"user_id": uuid.uuid4(), "since": now})
    assert params["status_1_1"] == "pending" and params["status_1_2"] == "queued"
    with pytest.raises(sa.exc.InvalidRequestError, match="since"):
        driver.parameters({"user_id": uuid.uuid4()})
    jsonb = OutboxMessage.__table__.c.payload.type
    payload = pipeline.DriverStatement(insert(OutboxMessage).values(payload=bindparam("p", type_=jsonb)),
                                       db.engine.dialect)
    bound = payload.parameters({"p": {"a": [1, "é"]}})["p"]  # SQLAlchemy's JSONB processor: psycopg's Jsonb
    assert type(bound).__name__ == "Jsonb" and json.loads(json.dumps(bound.obj)) == {"a": [1, "é"]}


def _count(db: Database, marker: str) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM outbox WHERE destination = :d"), {"d": marker}).scalar_one())


def _outbox_row(marker: str, row_id: uuid.UUID | None = None) -> tuple[pipeline.DriverStatement, dict[str, Any]]:
    stmt = insert(OutboxMessage).values(
        id=bindparam("id", type_=OutboxMessage.__table__.c.id.type),
        aggregate_id=bindparam("agg", type_=OutboxMessage.__table__.c.aggregate_id.type),
        destination=bindparam("d"), payload=bindparam("p", type_=OutboxMessage.__table__.c.payload.type),
        attempts=0, created_at=bindparam("at", type_=OutboxMessage.__table__.c.created_at.type))
    return stmt, {"id": row_id or uuid.uuid4(), "agg": uuid.uuid4(), "d": marker, "p": {}, "at": utcnow()}  # type: ignore[return-value]


def _clean(conn: Any) -> None:
    raw = conn.connection.driver_connection
    assert raw.info.transaction_status == 0 and not raw.autocommit  # as it came: idle, transactional


def test_a_failed_statement_raises_sqlalchemys_error_and_leaves_nothing(db: Database) -> None:
    marker = f"pipeline-{uuid.uuid4().hex[:8]}"
    stmt, values = _outbox_row(marker)
    row = pipeline.DriverStatement(stmt, db.engine.dialect)  # type: ignore[arg-type]
    with db.connection() as conn:
        with pytest.raises(sa.exc.IntegrityError):  # the same id twice: a primary key violation at COMMIT
            with pipeline.Pipelined(conn) as tx:
                tx.execute(row, values)
                tx.execute(row, values)
                tx.commit()
        _clean(conn)
        assert conn.execute(text("SELECT 1")).scalar_one() == 1  # the connection is fine for what follows
        conn.rollback()
    assert _count(db, marker) == 0


def test_a_block_left_by_an_exception_or_without_commit_is_rolled_back(db: Database) -> None:
    marker = f"pipeline-{uuid.uuid4().hex[:8]}"
    stmt, values = _outbox_row(marker)
    row = pipeline.DriverStatement(stmt, db.engine.dialect)  # type: ignore[arg-type]
    one = pipeline.DriverStatement(select(sa.literal(1)), db.engine.dialect)
    with db.connection() as conn:
        with pytest.raises(RuntimeError, match="quota"):
            with pipeline.Pipelined(conn) as tx:
                tx.execute(row, values)
                assert tx.first(one, {}) == (1,)  # the INSERT reached the server with this read
                raise RuntimeError("quota")
        _clean(conn)
        with pipeline.Pipelined(conn) as tx:
            tx.execute(row, {**values, "id": uuid.uuid4()})  # no commit()
        _clean(conn)
        with pipeline.Pipelined(conn) as tx:
            tx.execute(row, {**values, "id": uuid.uuid4()})
            tx.commit()
        _clean(conn)
    assert _count(db, marker) == 1


def test_a_connection_lost_mid_transaction_is_invalidated_and_raised_as_a_disconnect(db: Database) -> None:
    one = pipeline.DriverStatement(select(sa.literal(1)), db.engine.dialect)
    with db.connection() as conn:
        pid = conn.connection.driver_connection.info.backend_pid
        with pytest.raises(sa.exc.DBAPIError) as caught:
            with pipeline.Pipelined(conn) as tx:
                tx.first(one, {})
                with db.engine.connect() as other:
                    other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                tx.first(one, {})
        assert caught.value.connection_invalidated
        assert isinstance(caught.value, sa.exc.OperationalError)  # what chalicelib/api/http.py answers with 503
        assert conn.invalidated
    with db.engine.connect() as fresh:  # the pool hands out a working connection again
        assert fresh.execute(text("SELECT 1")).scalar_one() == 1


def test_a_connection_lost_before_the_block_fails_as_a_disconnect_wherever_the_driver_notices(db: Database) -> None:
    one = pipeline.DriverStatement(select(sa.literal(1)), db.engine.dialect)
    with db.connection() as conn:
        pid = conn.connection.driver_connection.info.backend_pid
        with db.engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(sa.exc.OperationalError) as caught:  # at BEGIN or at the first sync: either way this
            with pipeline.Pipelined(conn) as tx:
                tx.first(one, {})
        assert caught.value.connection_invalidated and conn.invalidated


def test_a_connection_inside_a_transaction_is_refused(db: Database) -> None:
    with db.connection() as conn:
        conn.execute(text("SELECT 1"))  # SQLAlchemy began a transaction on it
        with pytest.raises(sa.exc.InvalidRequestError, match="no transaction open"):
            with pipeline.Pipelined(conn):
                pass
        conn.rollback()


def test_a_connection_pinged_at_checkout_takes_a_pipelined_block(pg_url: str) -> None:
    """The idle ping (chalicelib/db/session.py) runs before the request has the connection: it must leave it idle."""
    from chalicelib.db.session import make_engine

    engine = make_engine(pg_url, ping_idle_seconds=0.0)  # every checkout of a used connection pings
    try:
        one = pipeline.DriverStatement(select(sa.literal(1)), engine.dialect)
        for _ in range(2):  # the second checkout is pinged
            with engine.connect() as conn:
                with pipeline.Pipelined(conn) as tx:
                    assert tx.first(one, {}) == (1,)
                    tx.commit()
                _clean(conn)
    finally:
        engine.dispose()
