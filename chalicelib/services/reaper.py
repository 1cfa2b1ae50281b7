"""Nothing stuck: the scheduled task reaper (functions/task_reaper.py).

Managed tasks only (external agents' tasks have their own lease reaper). Each rule is a conditional move
through `store_outcome` (the one outcome path), so a consumer finishing at the same moment wins or loses
cleanly, an orchestrator parent moves on, and a run still in flight is discarded when it ends:

- `processing` whose claim lease passed more than `stuck_grace` ago: the claimer's invocation is over and
  SQS redelivers only after the visibility timeout (at most 30 min), which would have claimed it again — no
  redelivery came (the message dead-lettered or vanished) → `timed_out` (`TASK_STUCK`);
- `processing` longer than `max_run` (orchestrator parents included) → `timed_out` (`TASK_RUN_TOO_LONG`);
  the plan run of such a parent is cancelled, and its open step tasks with it;
- `pending`/`queued` older than `max_queued` → `failed` (`DELIVERY_FAILED`): never delivered.

A dead-lettered message's task fails at once instead (`DeadLetterSweep`), without waiting for these ages.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from chalicelib.db.models import Agent, Task
from chalicelib.db.types import utcnow
from chalicelib.domain.leases import AgentMode
from chalicelib.domain.tasks import CLAIMABLE, TaskStatus
from chalicelib.errors import MalformedMessageError
from chalicelib.observability import logger
from chalicelib.services.results import store_outcome

if TYPE_CHECKING:
    from chalicelib.db.session import Database

DELIVERY_FAILED = "DELIVERY_FAILED"


@dataclass
class ReapReport:
    timed_out: int = 0
    failed: int = 0
    dead_lettered: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"timed_out": self.timed_out, "failed": self.failed, "dead_lettered": self.dead_lettered}


def _managed() -> Any:
    return Task.agent_id.in_(select(Agent.id).where(Agent.mode != AgentMode.EXTERNAL))


def finish(session: Session, task_id: uuid.UUID, status: str, error: dict[str, Any], now: datetime,
           from_statuses: tuple[str, ...]) -> bool:
    """Move one task to a terminal status with a reason (an orchestrator's plan run is cancelled with it:
    `store_outcome` calls chalicelib.workflows.plan_outcome.on_task_ended)."""
    return store_outcome(session, task_id, status, {}, {}, error, now=now, from_statuses=from_statuses)


class TaskReaper:
    def __init__(self, db: Database, *, stuck_grace_seconds: int, max_run_seconds: int, max_queued_seconds: int,
                 clock: Callable[[], datetime] = utcnow, batch: int = 100) -> None:
        self.db = db
        self.stuck_grace = timedelta(seconds=stuck_grace_seconds)
        self.max_run = timedelta(seconds=max_run_seconds)
        self.max_queued = timedelta(seconds=max_queued_seconds)
        self.clock = clock
        self.batch = batch

    def reap(self) -> ReapReport:
        """One pass, at most `batch` tasks per rule (the scheduled function drains by calling it again)."""
        report = ReapReport()
        now = self.clock()
        with self.db.transaction() as session:
            stuck = self._pick(session, Task.status == TaskStatus.PROCESSING, or_(
                and_(Task.lease_expires_at.is_not(None), Task.lease_expires_at < now - self.stuck_grace),
                Task.started_at < now - self.max_run))
            for task_id, lease, started in stuck:
                code, why = (("TASK_STUCK", "its claim lease passed and no redelivery came")
                             if lease is not None and lease < now - self.stuck_grace else
                             ("TASK_RUN_TOO_LONG", f"it ran longer than {int(self.max_run.total_seconds())} s"))
                error = {"code": code, "message": f"the task timed out: {why}",
                         "details": {"lease_expires_at": lease.isoformat() if lease else None,
                                     "started_at": started.isoformat() if started else None}}
                report.timed_out += finish(session, task_id, TaskStatus.TIMED_OUT, error, now,
                                           (TaskStatus.PROCESSING,))
            waiting = self._pick(session, Task.status.in_(CLAIMABLE), Task.created_at < now - self.max_queued)
            for task_id, _, _ in waiting:
                error = {"code": DELIVERY_FAILED,
                         "message": f"the task was not delivered within {int(self.max_queued.total_seconds())} s",
                         "details": {"reason": "max_queued_age"}}
                report.failed += finish(session, task_id, TaskStatus.FAILED, error, now, CLAIMABLE)
        if report.timed_out or report.failed:
            logger.warning("stuck tasks reaped", extra=report.as_dict())
        return report

    def _pick(self, session: Session, *where: Any) -> list[tuple[uuid.UUID, datetime | None, datetime | None]]:
        # SKIP LOCKED: a row a consumer or a cancel holds right now is theirs; the next pass sees it.
        rows = session.execute(select(Task.id, Task.lease_expires_at, Task.started_at).where(*where, _managed())
                               .order_by(Task.created_at).limit(self.batch)
                               .with_for_update(skip_locked=True, of=Task)).tuples().all()
        return list(rows)


class DeadLetterPort(Protocol):
    """Peek at an agent type's DLQ without deleting anything: the messages' bodies."""

    def peek(self, agent_type: str, max_messages: int) -> list[str]: ...


class DeadLetterSweep:
    """Every dead-lettered task message fails its task with DELIVERY_FAILED; the message stays in the DLQ.

    A scheduled peek, not an event source: a Lambda event source deletes what it handled, and the DLQ is the
    evidence an operator inspects and redrives. Messages are only hidden for a few seconds while peeked.
    """

    def __init__(self, db: Database, dead_letters: DeadLetterPort, agent_types: Iterable[str], *,
                 max_messages: int = 100, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.dead_letters = dead_letters
        self.agent_types = list(agent_types)
        self.max_messages = max_messages
        self.clock = clock

    def sweep(self) -> int:
        from chalicelib.services.processing import parse_message
        from chalicelib.workflows.steps import parse as parse_step
        from chalicelib.workflows.steps import step_task_id

        failed = 0
        for agent_type in self.agent_types:
            task_ids = []
            try:
                bodies = self.dead_letters.peek(agent_type, self.max_messages)
            except Exception:  # noqa: BLE001 - one unreachable DLQ must not stop the others' sweep
                logger.warning("could not peek at a DLQ", extra={"agent_type": agent_type}, exc_info=True)
                continue
            for body in bodies:
                try:
                    step = parse_step(body)  # a workflow step's message names its task by its token
                    task_ids.append(step_task_id(step.token, step.retry_count) if step is not None
                                    else parse_message(body, agent_type).task_id)
                except MalformedMessageError:
                    continue  # not a task message: nothing to mark (it stays in the DLQ for the operator)
            if not task_ids:
                continue
            now = self.clock()
            with self.db.transaction() as session:
                live = session.scalars(select(Task.id).where(
                    Task.id.in_(task_ids), Task.agent_type == agent_type,
                    Task.status.in_((*CLAIMABLE, TaskStatus.PROCESSING)), _managed())
                    .with_for_update(skip_locked=True, of=Task)).all()
                for task_id in live:
                    error = {"code": DELIVERY_FAILED, "message": "the task's message was dead-lettered",
                             "details": {"queue": f"agent-{agent_type}-dlq"}}
                    failed += finish(session, task_id, TaskStatus.FAILED, error, now,
                                     (*CLAIMABLE, TaskStatus.PROCESSING))
        if failed:
            logger.warning("dead-lettered tasks failed", extra={"failed": failed})
        return failed
