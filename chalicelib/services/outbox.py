"""The outbox relay: publishes what committed transactions promised, at least once."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from chalicelib.db.models import Agent, OutboxMessage, Task
from chalicelib.db.session import Database
from chalicelib.db.types import utcnow
from chalicelib.domain.leases import AgentMode
from chalicelib.domain.tasks import TaskStatus
from chalicelib.messaging.sqs import Publisher
from chalicelib.observability import logger


@dataclass(frozen=True)
class RelayReport:
    published: int
    failed: int


class OutboxRelay:
    def __init__(self, db: Database, publisher: Publisher, batch_limit: int = 100) -> None:
        self.db = db
        self.publisher = publisher
        self.batch_limit = batch_limit

    def publish_one(self, outbox_id: uuid.UUID) -> None:
        """Fast path right after a commit. Failure is not an error: the scheduled relay retries."""
        try:
            self.run_once(only_ids=[outbox_id])
        except Exception:  # noqa: BLE001 - any failure here is retried by the scheduled relay
            logger.warning("outbox fast-path publish failed; the relay will retry",
                           extra={"outbox_id": str(outbox_id)}, exc_info=True)

    def run_once(self, only_ids: list[uuid.UUID] | None = None) -> RelayReport:
        with self.db.transaction() as session:
            stmt = select(OutboxMessage).where(OutboxMessage.published_at.is_(None))
            if only_ids is not None:
                stmt = stmt.where(OutboxMessage.id.in_(only_ids))
            # Concurrent relays (API fast path + schedule) each take different rows.
            stmt = stmt.order_by(OutboxMessage.created_at).limit(self.batch_limit)
            rows = list(session.scalars(stmt.with_for_update(skip_locked=True)))
            if not rows:
                return RelayReport(0, 0)
            rows = _settle_external(session, rows)
            by_destination: dict[str, list[OutboxMessage]] = defaultdict(list)
            for row in rows:
                by_destination[row.destination].append(row)
            now = utcnow()
            published: list[OutboxMessage] = []
            failed = 0
            for destination, group in by_destination.items():
                try:
                    failed_ids = self.publisher.publish(destination, [(row.id.hex, row.payload) for row in group])
                    error = "rejected by the queue"
                except Exception as exc:  # noqa: BLE001 - recorded on the row and retried
                    failed_ids = {row.id.hex for row in group}
                    error = f"{type(exc).__name__}: {exc}"[:500]
                for row in group:
                    if row.id.hex in failed_ids:
                        row.attempts += 1
                        row.last_error = error
                        failed += 1
                    else:
                        row.published_at = now
                        published.append(row)
            if published:
                session.execute(
                    update(Task)
                    .where(Task.id.in_([row.aggregate_id for row in published]), Task.status == TaskStatus.PENDING)
                    .values(status=TaskStatus.QUEUED, updated_at=now)
                    .execution_options(synchronize_session=False)
                )
        if failed:
            logger.warning("outbox relay could not publish some messages", extra={"failed": failed})
        return RelayReport(len(published), failed)


def _settle_external(session: Session, rows: list[OutboxMessage]) -> list[OutboxMessage]:
    """Rows announcing a task of an EXTERNAL agent are settled unpublished: that task waits in `queued`
    for its worker's lease, and on SQS a managed consumer would run it instead. TaskService writes no
    such rows; this keeps any other producer (subtasks, ...) from leaking one onto a queue."""
    external = set(session.scalars(
        select(Task.id).join(Agent, Agent.id == Task.agent_id)
        .where(Task.id.in_([row.aggregate_id for row in rows]), Agent.mode == AgentMode.EXTERNAL)
    ))
    if not external:
        return rows
    now = utcnow()
    for row in rows:
        if row.aggregate_id in external:
            row.published_at = now
            row.last_error = "not published: the task's agent is external (it leases its tasks)"
    session.execute(update(Task).where(Task.id.in_(external), Task.status == TaskStatus.PENDING)
                    .values(status=TaskStatus.QUEUED, updated_at=now).execution_options(synchronize_session=False))
    return [row for row in rows if row.aggregate_id not in external]
