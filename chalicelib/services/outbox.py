"""The outbox relay: publishes what committed transactions promised, at least once.

Rows are taken by `(attempts, created_at)` among those due (`next_attempt_at`): a row that failed waits
out an exponential, jittered backoff and then queues behind every row that has failed less, so one
broken destination cannot stall the others. After `max_attempts` failures a row is parked (never tried
again by the relay) and the operators are alerted. A relay that dies after SQS accepted a message but
before its transaction committed publishes that message again on the next sweep: consumers claim a
task once (`TaskProcessor._claim`), so the duplicate is acknowledged without a second run.
"""

from __future__ import annotations

import functools
import random
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, bindparam, or_, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from chalicelib.db import pipeline
from chalicelib.db.models import Agent, OutboxMessage, Task
from chalicelib.db.session import Database
from chalicelib.db.types import utcnow
from chalicelib.domain.leases import AgentMode
from chalicelib.domain.tasks import TaskStatus
from chalicelib.messaging.sqs import Publisher
from chalicelib.observability import logger
from chalicelib.workflows.messages import ERROR_STEP_FAILED

if TYPE_CHECKING:
    from chalicelib.services.alerts import AlertPublisher
    from chalicelib.workflows.ports import TaskCallbacks

#: workflow token answers (chalicelib.workflows.runstate): sent to Step Functions, not to a queue.
STATES = "states"


@dataclass(frozen=True)
class RelayReport:
    published: int
    failed: int
    #: rows looked at (published + failed + settled unpublished): a full batch means more may be due.
    taken: int = 0
    parked: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Backoff:
    """Delay before retry n (n = failed attempts so far): base * 2**(n-1), capped, then 50-100 % of it."""

    base_seconds: float = 30.0
    max_seconds: float = 3600.0

    def delay(self, attempts: int, rng: random.Random) -> float:
        ceiling = min(self.max_seconds, self.base_seconds * 2 ** min(max(attempts - 1, 0), 32))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


class OutboxRelay:
    def __init__(self, db: Database, publisher: Publisher, batch_limit: int = 100, *, max_attempts: int = 15,
                 backoff: Backoff | None = None, alerts: AlertPublisher | None = None,
                 clock: Callable[[], datetime] = utcnow, rng: random.Random | None = None,
                 callbacks: Callable[[], TaskCallbacks] | None = None) -> None:
        self.db = db
        #: where "states" rows go (SendTaskSuccess/Failure), built on first use.
        self.callbacks = callbacks
        self.publisher = publisher
        self.batch_limit = batch_limit
        self.max_attempts = max_attempts
        self.backoff = backoff or Backoff()
        self.alerts = alerts
        self.clock = clock
        self.rng = rng or random.Random()

    def publish_one(self, outbox_id: uuid.UUID) -> None:
        """Fast path right after a commit. Failure is not an error: the scheduled relay retries."""
        try:
            # A miss here schedules no backoff: the row is simply due for the next sweep (a minute away).
            self.run_once(only_ids=[outbox_id], backoff=False)
        except Exception:  # noqa: BLE001 - any failure here is retried by the scheduled relay
            logger.warning("outbox fast-path publish failed; the relay will retry",
                           extra={"outbox_id": str(outbox_id)}, exc_info=True)

    def publish_many(self, outbox_ids: list[uuid.UUID]) -> None:
        """Fast path for the rows a committed transaction wrote (workflow answers); the relay is the safety net."""
        if not outbox_ids:
            return
        try:
            self.run_once(only_ids=outbox_ids, backoff=False)
        except Exception:  # noqa: BLE001 - any failure here is retried by the scheduled relay
            logger.warning("outbox fast-path publish failed; the relay will retry",
                           extra={"outbox_ids": [str(i) for i in outbox_ids[:10]]}, exc_info=True)

    def publish_committed(self, conn: Connection, outbox_id: uuid.UUID, destination: str,
                          payload: dict[str, Any]) -> None:
        """The fast path right after the creating transaction committed on `conn`: publish the message the
        caller just wrote (no read of the row), then one statement marks it published and its task queued.

        No row lock: a sweep that ran in the milliseconds between the commit and the mark publishes it too,
        a duplicate the consumer absorbs. Never raises: a failure leaves the row to the scheduled relay."""
        try:
            try:
                failed = self.publisher.publish(destination, [(outbox_id.hex, payload)])
                error = "rejected by the queue"
            except Exception as exc:  # noqa: BLE001 - recorded on the row and retried by the relay
                failed, error = {outbox_id.hex}, f"{type(exc).__name__}: {exc}"[:500]
            if not failed and pipeline.supported(conn.dialect) and not conn.in_transaction():
                # BEGIN, the mark and COMMIT in one round trip, like the create before it (chalicelib/db/pipeline.py):
                # the user's event counter row that the task's status trigger locks is held for the statement and
                # the commit only (a user's concurrent POSTs queue on that row).
                with pipeline.Pipelined(conn) as tx:
                    tx.execute(_driver_mark(conn.dialect), {"outbox_id": outbox_id, "now": self.clock()})
                    tx.commit()
            else:
                statements = [(update(OutboxMessage)
                               .where(OutboxMessage.id == outbox_id, OutboxMessage.published_at.is_(None))
                               .values(attempts=OutboxMessage.attempts + 1, last_error=error), {})] if failed else \
                    _mark_published(outbox_id, self.clock(), conn.dialect.name)
                if len(statements) == 1 and not conn.in_transaction():
                    # One statement is its own transaction (autocommit): released as it completes, not a COMMIT
                    # round trip later. The pool resets the level on checkin.
                    conn.execution_options(isolation_level="AUTOCOMMIT")
                for stmt, params in statements:
                    conn.execute(stmt, params)
                conn.commit()
        except Exception:  # noqa: BLE001 - the scheduled relay retries whatever this did not finish
            logger.warning("outbox fast-path publish failed; the relay will retry",
                           extra={"outbox_id": str(outbox_id)}, exc_info=True)
            return
        if failed:
            logger.warning("outbox fast-path publish failed; the relay will retry",
                           extra={"outbox_id": str(outbox_id), "error": error})

    def run_once(self, only_ids: list[uuid.UUID] | None = None, *, backoff: bool = True) -> RelayReport:
        now = self.clock()
        with self.db.transaction() as session:
            stmt = select(OutboxMessage).where(
                OutboxMessage.published_at.is_(None), OutboxMessage.parked_at.is_(None),
                or_(OutboxMessage.next_attempt_at.is_(None), OutboxMessage.next_attempt_at <= now))
            if only_ids is not None:
                stmt = stmt.where(OutboxMessage.id.in_(only_ids))
            # Concurrent relays (API fast path + schedule) each take different rows.
            stmt = stmt.order_by(OutboxMessage.attempts, OutboxMessage.created_at).limit(self.batch_limit)
            rows = list(session.scalars(stmt.with_for_update(skip_locked=True)))
            if not rows:
                return RelayReport(0, 0)
            taken = len(rows)
            rows = _settle_external(session, rows, now)
            published, failed, parked = self._publish(session, rows, now, backoff)
            if published:
                session.execute(
                    update(Task)
                    .where(Task.id.in_([row.aggregate_id for row in published]), Task.status == TaskStatus.PENDING)
                    .values(status=TaskStatus.QUEUED, updated_at=now)
                    .execution_options(synchronize_session=False)
                )
        if failed:
            logger.warning("outbox relay could not publish some messages", extra={"failed": len(failed)})
        counts = {destination: len(group) for destination, group in parked.items()}
        for destination, group in parked.items():
            self._alert_parked(destination, group)
        return RelayReport(len(published), len(failed), taken, counts)

    def _publish(self, session: Session, rows: list[OutboxMessage], now: datetime, backoff: bool
                 ) -> tuple[list[OutboxMessage], list[OutboxMessage], dict[str, list[OutboxMessage]]]:
        by_destination: dict[str, list[OutboxMessage]] = defaultdict(list)
        for row in rows:
            by_destination[row.destination].append(row)
        published: list[OutboxMessage] = []
        failed: list[OutboxMessage] = []
        parked: dict[str, list[OutboxMessage]] = defaultdict(list)
        for destination, group in by_destination.items():
            errors: dict[str, str] = {}
            if destination == STATES:
                errors = self._answer(session, group)
                failed_ids, error = set(errors), ""
            else:
                try:
                    failed_ids = self.publisher.publish(destination, [(row.id.hex, row.payload) for row in group])
                    error = "rejected by the queue"
                except Exception as exc:  # noqa: BLE001 - recorded on the row and retried
                    failed_ids = {row.id.hex for row in group}
                    error = f"{type(exc).__name__}: {exc}"[:500]
            for row in group:
                error = errors.get(row.id.hex, error)
                if row.id.hex not in failed_ids:
                    row.published_at = now
                    published.append(row)
                    continue
                row.attempts += 1
                row.last_error = error
                failed.append(row)
                if row.attempts >= self.max_attempts:
                    row.parked_at = now
                    parked[destination].append(row)
                elif backoff:
                    row.next_attempt_at = now + timedelta(seconds=self.backoff.delay(row.attempts, self.rng))
        return published, failed, parked

    def _answer(self, session: Session, rows: list[OutboxMessage]) -> dict[str, str]:
        """Send workflow token answers one by one; return {row id hex: error} for those to retry.

        A "late" answer (the token is closed) counts as published: it is recorded on the run step."""
        from chalicelib.workflows.runstate import record_late

        errors: dict[str, str] = {}
        if self.callbacks is None:
            return {row.id.hex: "no Step Functions callbacks configured" for row in rows}
        port = self.callbacks()
        for row in rows:
            p = row.payload
            try:
                result = (port.succeed(p["token"], p.get("output") or {}) if p.get("action") == "succeed"
                          else port.fail(p["token"], p.get("error") or ERROR_STEP_FAILED, p.get("cause") or ""))
            except Exception as exc:  # noqa: BLE001 - recorded on the row and retried with backoff
                errors[row.id.hex] = f"{type(exc).__name__}: {exc}"[:500]
                continue
            if result == "late":
                row.last_error = "late: the task token was no longer open"
                record_late(session, p, self.clock())
        return errors

    def _alert_parked(self, destination: str, rows: list[OutboxMessage]) -> None:
        logger.error("outbox messages parked after the attempt cap",
                     extra={"destination": destination, "count": len(rows), "last_error": rows[-1].last_error})
        if self.alerts is None:
            return
        from chalicelib.services.alerts import Alert

        self.alerts.publish(Alert(
            kind="outbox_parked", severity="critical",
            summary=f"{len(rows)} outbox message(s) for {destination} parked after {self.max_attempts} attempts",
            details={"destination": destination, "count": len(rows), "last_error": rows[-1].last_error,
                     "outbox_ids": [str(row.id) for row in rows[:10]],
                     "task_ids": [str(row.aggregate_id) for row in rows[:10]]},
            fingerprint=f"outbox_parked:{destination}"))


def _mark_published(outbox_id: uuid.UUID, now: datetime, dialect: str) -> list[tuple[Any, dict[str, Any]]]:
    """The row published and its task `queued` if still `pending`: one statement on Postgres (a data-modifying
    CTE), two elsewhere (SQLite has none); each with its parameters."""
    params = {"outbox_id": outbox_id, "now": now}
    return [(stmt, params) for stmt in _mark_published_statements(dialect)]


@functools.lru_cache(maxsize=4)
def _mark_published_statements(dialect: str) -> tuple[Any, ...]:
    """Built once, values bound per call: building them cost ~0.5 ms of CPU per POST /tasks (issue #14)."""
    outbox_id, now = bindparam("outbox_id", type_=OutboxMessage.__table__.c.id.type), \
        bindparam("now", type_=OutboxMessage.__table__.c.published_at.type)
    mark = (update(OutboxMessage).where(OutboxMessage.id == outbox_id, OutboxMessage.published_at.is_(None))
            .values(published_at=now))
    queued = update(Task).where(Task.status == TaskStatus.PENDING).values(status=TaskStatus.QUEUED, updated_at=now)
    if dialect == "postgresql":
        marked = mark.returning(OutboxMessage.aggregate_id).cte("marked")
        return (queued.where(Task.id.in_(select(marked.c.aggregate_id))).add_cte(marked),)
    return (mark, queued.where(Task.id == select(OutboxMessage.aggregate_id)
                               .where(OutboxMessage.id == outbox_id).scalar_subquery()))


@functools.lru_cache(maxsize=4)
def _driver_mark(dialect: Dialect) -> pipeline.DriverStatement:
    (stmt,) = _mark_published_statements(dialect.name)
    return pipeline.DriverStatement(stmt, dialect)


def _settle_external(session: Session, rows: list[OutboxMessage], now: datetime) -> list[OutboxMessage]:
    """Rows announcing a task of an EXTERNAL agent are settled unpublished: that task waits in `queued`
    for its worker's lease, and on SQS a managed consumer would run it instead. TaskService writes no
    such rows; this keeps any other producer (subtasks, ...) from leaking one onto a queue."""
    # Workflow answers name a step task only as their aggregate: they are never settled here.
    external = set(session.scalars(
        select(Task.id).join(Agent, Agent.id == Task.agent_id)
        .where(Task.id.in_([row.aggregate_id for row in rows if row.destination != STATES]),
               Agent.mode == AgentMode.EXTERNAL)
    ))
    if not external:
        return rows
    for row in rows:
        if row.aggregate_id in external and row.destination != STATES:
            row.published_at = now
            row.last_error = "not published: the task's agent is external (it leases its tasks)"
    session.execute(update(Task).where(Task.id.in_(external), Task.status == TaskStatus.PENDING)
                    .values(status=TaskStatus.QUEUED, updated_at=now).execution_options(synchronize_session=False))
    return [row for row in rows if row.aggregate_id not in external or row.destination == STATES]
