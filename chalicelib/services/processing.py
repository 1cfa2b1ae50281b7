"""Running tasks delivered by SQS: claim, run the agent, store the outcome.

A whole batch is one database transaction; each record works inside its own
SAVEPOINT so a record that fails (and is retried by SQS) leaves the others'
writes intact. The claim is a conditional update, so a duplicate or stale
delivery never runs a task twice: on Postgres a concurrent duplicate waits
for the row lock, then finds the task no longer claimable.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from chalicelib.agents.base import Agent as AgentImpl
from chalicelib.agents.base import AgentContext
from chalicelib.agents.registry import get_agent, pydantic_errors
from chalicelib.agents.sandbox import run_task_agent
from chalicelib.db.models import Agent, Task
from chalicelib.db.types import utcnow
from chalicelib.domain.tasks import CLAIMABLE, TaskStatus
from chalicelib.errors import AgentError, MalformedMessageError
from chalicelib.observability import logger
from chalicelib.schemas.tasks import TaskMessage
from chalicelib.services.results import store_outcome

if TYPE_CHECKING:
    from chalicelib.container import Container

RunResult = tuple[str, dict[str, Any], dict[str, Any], dict[str, Any] | None]
#: an agent said "not finished yet" (e.g. an orchestrator waiting for subtasks).
PENDING = "pending_work"


@dataclass(frozen=True)
class Outcome:
    task_id: uuid.UUID
    status: str  # completed | failed | skipped | pending_work


def parse_message(body: str, queue_agent_type: str | None) -> TaskMessage:
    try:
        message = TaskMessage.model_validate_json(body)
    except PydanticValidationError as exc:
        raise MalformedMessageError("message body is not a task message",
                                    {"errors": pydantic_errors(exc)}) from exc
    if queue_agent_type is not None and message.agent_type != queue_agent_type:
        raise MalformedMessageError(
            "message agent_type does not match its queue",
            {"message_agent_type": message.agent_type, "queue_agent_type": queue_agent_type},
        )
    return message


class TaskProcessor:
    def __init__(self, agent_loader: Callable[[str], AgentImpl] = get_agent, max_attempts: int = 5,
                 container: Container | None = None) -> None:
        self.agent_loader = agent_loader
        #: handed to agents through AgentContext (providers, settings, publisher...).
        self.container = container
        #: the queue's maxReceiveCount: on the last delivery an unexpected crash fails the
        #: task instead of leaving it queued forever behind a message in the DLQ.
        self.max_attempts = max_attempts

    def process(self, session: Session, message: TaskMessage, receive_count: int = 1) -> Outcome:
        """Run one task inside the caller's transaction (under a savepoint)."""
        with session.begin_nested():
            task = self._claim(session, message.task_id)
            if task is None:
                return Outcome(message.task_id, "skipped")
            if task.agent_type != message.agent_type:
                raise MalformedMessageError("message agent_type does not match the task",
                                            {"task_agent_type": task.agent_type})
            config = self._agent_config(session, task.agent_id)
            ctx = AgentContext(task_id=task.id, agent_id=task.agent_id, user_id=task.user_id,
                               agent_type=task.agent_type, session=session, container=self.container,  # type: ignore[arg-type]
                               now=utcnow(), attempt=receive_count)
            status, output, metrics, error = self._run(task, config, ctx, receive_count >= self.max_attempts)
            if status == PENDING:
                logger.info("task waiting", extra={"task_id": str(task.id), "agent_type": task.agent_type})
                return Outcome(task.id, PENDING)
            # The one outcome path (shared with external workers and the lease reaper): result row,
            # status, and an orchestrator parent moved on in this transaction.
            store_outcome(session, task.id, status, output, metrics, error)
        logger.info("task finished", extra={"task_id": str(task.id), "status": status,
                                            "agent_type": task.agent_type})
        return Outcome(task.id, status)

    def _agent_config(self, session: Session, agent_id: uuid.UUID) -> dict[str, Any]:
        """The agent's config, from the agent cache when there is one (saves a query per task)."""
        if self.container is not None:
            record = self.container.agents.record(agent_id, session)
            if record is not None:
                # A copy: the cached record is shared with every reader in this process.
                return copy.deepcopy(record.config)
        # Deleted agents are not cached; a task already running for one still gets its config.
        return session.scalar(select(Agent.config).where(Agent.id == agent_id)) or {}

    def _claim(self, session: Session, task_id: uuid.UUID) -> Task | None:
        exists = session.scalar(select(Task.status).where(Task.id == task_id))
        if exists is None:
            raise MalformedMessageError("message names a task that does not exist", {"task_id": str(task_id)})
        now = utcnow()
        claimed = session.execute(
            update(Task)
            .where(Task.id == task_id, Task.status.in_(CLAIMABLE))
            .values(status=TaskStatus.PROCESSING, attempts=Task.attempts + 1, started_at=now, updated_at=now)
            .returning(Task.id)
            .execution_options(synchronize_session=False)
        ).first()
        if claimed is None:
            logger.info("task not claimable; duplicate or stale delivery acknowledged",
                        extra={"task_id": str(task_id), "status": exists})
            return None
        return session.get(Task, task_id, populate_existing=True)

    def _run(self, task: Task, config: dict[str, Any], ctx: AgentContext, final_attempt: bool) -> RunResult:
        started = time.perf_counter()

        def failed(code: str, message: str, details: dict[str, Any]) -> RunResult:
            elapsed = round((time.perf_counter() - started) * 1000, 3)
            return TaskStatus.FAILED, {}, {"duration_ms": elapsed}, {"code": code, "message": message,
                                                                      "details": details}

        try:
            agent = self.agent_loader(task.agent_type)
            data = agent.Input.model_validate(task.input_data)
            result = run_task_agent(agent, data, config, ctx)  # budgets and output cap: agents/sandbox.py
        except AgentError as exc:
            return failed(exc.code, exc.message, exc.details)
        except PydanticValidationError as exc:
            return failed("AGENT_INPUT_INVALID", "input_data does not match the agent's schema",
                          {"errors": pydantic_errors(exc, prefix=("input_data",))})
        except Exception as exc:
            if not final_attempt:
                raise  # transient until proven otherwise: SQS redelivers
            logger.exception("agent crashed on its last attempt", extra={"task_id": str(task.id)})
            return failed("AGENT_CRASHED", f"the agent failed unexpectedly on every attempt: {type(exc).__name__}",
                          {"attempts": self.max_attempts})
        elapsed = round((time.perf_counter() - started) * 1000, 3)
        if result.pending:
            return PENDING, result.output, result.metrics, None
        metrics = {"duration_ms": elapsed, **result.metrics}
        return TaskStatus.COMPLETED, result.output, metrics, None
