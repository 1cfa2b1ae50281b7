"""The outbox relay against real Postgres: fairness, backoff, the attempt cap, and crash-duplicates."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from chalicelib.db.models import Agent, OutboxMessage, Task, TaskResult
from chalicelib.db.session import Database
from chalicelib.db.types import utcnow
from chalicelib.schemas.tasks import TaskCreate
from chalicelib.services.meta import RequestMeta
from chalicelib.services.outbox import Backoff, OutboxRelay
from chalicelib.services.tasks import TaskService
from functions.agent_consumer import handler as consumer_handler
from functions.outbox_relay import handler as relay_handler
from tests.integration.conftest import PREFIX, Api, FakeContext, sqs_event
from tests.integration.test_api_tasks import SCHEMA_TASK


class OneQueueDown:
    """SQS where one destination refuses everything (a deleted queue, a denied policy)."""

    def __init__(self, broken: str) -> None:
        self.broken = broken
        self.sent: list[tuple[str, str]] = []

    def publish(self, destination: str, messages: Sequence[tuple[str, dict[str, Any]]]) -> set[str]:
        if destination == self.broken:
            raise ConnectionError(f"queue {destination} does not exist")
        self.sent.extend((destination, msg_id) for msg_id, _ in messages)
        return set()


class Alerts:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def publish(self, alert: Any, context: Any = None) -> dict[str, Any]:
        self.sent.append(alert)
        return {"status": "sent"}


def add_rows(db: Database, destination: str, n: int, created_at: datetime) -> list[uuid.UUID]:
    rows = [OutboxMessage(aggregate_id=uuid.uuid4(), destination=destination, payload={"n": i},
                          created_at=created_at + timedelta(milliseconds=i)) for i in range(n)]
    with db.transaction() as session:
        session.add_all(rows)
    return [row.id for row in rows]


def outbox(db: Database, outbox_id: uuid.UUID) -> OutboxMessage:
    with db.read() as session:
        row = session.get(OutboxMessage, outbox_id)
        assert row is not None
        return row


def test_a_broken_queue_in_front_does_not_stall_a_good_one(container: Any, db: Database) -> None:
    # GIVEN 100 messages for a broken queue, all older than one message for a working queue
    start = utcnow() - timedelta(minutes=5)
    add_rows(db, "broken", 100, start)
    [good] = add_rows(db, "validation", 1, start + timedelta(minutes=1))
    sqs = OneQueueDown("broken")
    container.relay.publisher = sqs
    # WHEN the scheduled relay runs once
    report = relay_handler({}, FakeContext())
    # THEN the good message is published, and the broken ones are waiting out a backoff
    assert ("validation", good.hex) in sqs.sent
    assert report["published"] == 1 and report["failed"] == 100
    assert outbox(db, good).published_at is not None
    # and a second sweep right away does not hammer the broken queue again
    assert relay_handler({}, FakeContext())["failed"] == 0


def test_rows_that_failed_less_go_first(db: Database) -> None:
    now = utcnow()
    [old] = add_rows(db, "validation", 1, now - timedelta(hours=1))
    [new] = add_rows(db, "validation", 1, now)
    with db.transaction() as session:
        session.get(OutboxMessage, old).attempts = 3  # type: ignore[union-attr]
    sqs = OneQueueDown("none")
    OutboxRelay(db, sqs, batch_limit=1).run_once()
    assert sqs.sent == [("validation", new.hex)]


def test_failures_back_off_exponentially_with_jitter(db: Database) -> None:
    t0 = utcnow()
    clock = [t0]
    [row_id] = add_rows(db, "broken", 1, t0 - timedelta(seconds=1))
    relay = OutboxRelay(db, OneQueueDown("broken"), backoff=Backoff(10, 1000), max_attempts=50,
                        clock=lambda: clock[0], rng=random.Random(7))
    delays = []
    for attempt in range(1, 6):
        assert relay.run_once().failed == 1
        row = outbox(db, row_id)
        assert row.attempts == attempt and row.next_attempt_at is not None
        delay = (row.next_attempt_at - clock[0]).total_seconds()
        ceiling = 10 * 2 ** (attempt - 1)
        assert ceiling / 2 <= delay <= ceiling
        delays.append(delay)
        # not due yet: a sweep just before the backoff ends leaves it alone
        clock[0] = row.next_attempt_at - timedelta(milliseconds=1)
        assert relay.run_once().taken == 0
        clock[0] = row.next_attempt_at
    assert len(set(delays)) == 5  # jittered


def test_past_the_attempt_cap_a_row_is_parked_and_the_operators_alerted(db: Database) -> None:
    t0 = utcnow()
    clock = [t0]
    [row_id] = add_rows(db, "broken", 1, t0 - timedelta(seconds=1))
    alerts = Alerts()
    relay = OutboxRelay(db, OneQueueDown("broken"), backoff=Backoff(0, 0), max_attempts=3,
                        alerts=alerts, clock=lambda: clock[0])  # type: ignore[arg-type]
    assert [relay.run_once().parked for _ in range(3)] == [{}, {}, {"broken": 1}]
    row = outbox(db, row_id)
    assert row.parked_at is not None and row.published_at is None and row.attempts == 3
    assert "does not exist" in (row.last_error or "")
    [alert] = alerts.sent
    assert alert.kind == "outbox_parked" and alert.severity == "critical"
    assert alert.details["destination"] == "broken" and alert.details["outbox_ids"] == [str(row_id)]
    clock[0] = t0 + timedelta(days=1)
    assert relay.run_once().taken == 0  # never tried again by the relay
    assert len(alerts.sent) == 1


class Crash(BaseException):
    """The Lambda dying (timeout, out of memory) between SQS accepting a batch and the commit."""


class CrashAfterPublish:
    def __init__(self, real: Any) -> None:
        self.real = real

    def publish(self, destination: str, messages: Sequence[tuple[str, dict[str, Any]]]) -> set[str]:
        self.real.publish(destination, messages)
        raise Crash()


def test_a_relay_crash_after_publishing_makes_a_duplicate_that_the_consumer_absorbs(
        api: Api, container: Any, aws: Any, db: Database) -> None:
    api.signup()
    agent_id = uuid.UUID(api.agent()["id"])
    with db.read() as session:
        user_id = session.scalar(select(Agent.user_id).where(Agent.id == agent_id))
    task = TaskService(db).create(user_id, TaskCreate(agent_id=agent_id, title="once", input_data=SCHEMA_TASK),
                                  RequestMeta())  # no fast path: the relay below publishes it
    with pytest.raises(Crash):
        OutboxRelay(db, CrashAfterPublish(container.publisher)).run_once()
    with db.read() as session:
        row = session.scalar(select(OutboxMessage))
        assert row is not None and row.published_at is None  # the mark was rolled back with the crash
    assert container.relay.run_once().published == 1  # the next sweep publishes it again

    url = aws.get_queue_url(QueueName=f"{PREFIX}-agent-validation")["QueueUrl"]
    messages = aws.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    assert len(messages) == 2
    for m in messages:  # one delivery each, as two invocations would see them
        assert consumer_handler(sqs_event([(m["MessageId"], m["Body"])]), FakeContext()) == {"batchItemFailures": []}
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(TaskResult).where(TaskResult.task_id == task.id)) == 1
        done = session.get(Task, task.id)
        assert done is not None and done.status == "completed" and done.attempts == 1


def test_post_tasks_writes_its_task_outbox_and_audit_rows_in_one_statement(api: Api, db: Database) -> None:
    """Issue #14: the create's three ORM flushes (outbox, audit, task) were three INSERTs and most of its CPU.
    GIVEN a managed agent WHEN a task is created THEN one statement inserts all three rows, and each holds
    what the unit of work wrote."""
    from sqlalchemy import event

    from chalicelib.db.models import AuditLog
    from tests.integration.test_api_tasks import create_task

    api.signup()
    agent = api.agent()
    create_task(api, agent["id"])  # warm: the agent cache, the queue URL
    statements: list[str] = []

    def on_statement(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", on_statement)
    try:
        r = create_task(api, agent["id"], priority="high", description="one round trip")
    finally:
        event.remove(db.engine, "before_cursor_execute", on_statement)
    assert r.status_code == 202
    inserts = [s for s in statements if "INSERT INTO" in s]
    assert len(inserts) == 1, inserts
    assert all(f"INSERT INTO {table}" in inserts[0] for table in ("outbox", "audit_logs", "tasks"))
    task_id = uuid.UUID(r.json_body["id"])
    with db.read() as session:
        task = session.get(Task, task_id)
        assert task is not None and (task.priority, task.description, task.attempts) == ("high", "one round trip", 0)
        assert r.json_body["created_at"].startswith(task.created_at.isoformat()[:19])
        outbox = session.scalars(select(OutboxMessage).where(OutboxMessage.aggregate_id == task_id)).one()
        assert (outbox.destination, outbox.payload, outbox.attempts) == (
            "validation", {"task_id": str(task_id), "agent_type": "validation"}, 0)
        assert outbox.published_at is not None
        row = session.scalars(select(AuditLog).where(AuditLog.resource_id == str(task_id))).one()
        assert (row.event_type, row.action, row.resource_type) == ("task.created", "create", "task")
        assert row.details == {"agent_id": agent["id"], "agent_type": "validation", "routed": False}
        assert row.user_id == task.user_id


def test_post_tasks_publishes_on_its_own_connection_with_one_marking_statement(api: Api, aws: Any,
                                                                               db: Database) -> None:
    """Issue #14: the fast path used a second pool checkout and transaction (select, settle, update x2)."""
    from sqlalchemy import event

    from tests.integration.test_api_tasks import create_task, receive_all

    api.signup()
    agent = api.agent()
    create_task(api, agent["id"])  # warm: the agent cache, the queue URL
    checkouts: list[int] = []
    after_publish: list[str] = []

    def on_checkout(*_: Any) -> None:
        checkouts.append(1)

    def on_statement(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        after_publish.append(statement)

    event.listen(db.engine, "checkout", on_checkout)
    event.listen(db.engine, "before_cursor_execute", on_statement)
    try:
        r = create_task(api, agent["id"])
    finally:
        event.remove(db.engine, "checkout", on_checkout)
        event.remove(db.engine, "before_cursor_execute", on_statement)
    assert r.status_code == 202
    assert len(checkouts) == 1
    # (the create writes its outbox row in the task's INSERT statement: WITH created_outbox AS (INSERT ...) ...)
    touching_outbox_after_insert = [s for s in after_publish if "outbox" in s and "INSERT INTO outbox" not in s]
    assert len(touching_outbox_after_insert) == 1  # the one statement that marks it published and the task queued
    with db.read() as session:
        assert session.get(Task, uuid.UUID(r.json_body["id"])).status == "queued"  # type: ignore[union-attr]
        assert session.scalar(select(func.count()).select_from(OutboxMessage)
                              .where(OutboxMessage.published_at.is_(None))) == 0
    assert len(receive_all(aws)) == 2
