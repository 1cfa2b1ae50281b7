"""Task use cases: create (task + outbox row in one transaction), read, list, cancel."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session, selectinload

from chalicelib.agents import registry
from chalicelib.db.models import OutboxMessage, Task
from chalicelib.db.session import Database
from chalicelib.db.types import utcnow
from chalicelib.domain.tasks import CANCELLABLE, TaskStatus
from chalicelib.errors import ConflictError, NotFoundError, ValidationError
from chalicelib.schemas.tasks import TaskCreate, TaskListQuery
from chalicelib.services import audit
from chalicelib.services.agents import get_owned_agent
from chalicelib.services.meta import RequestMeta
from chalicelib.services.pagination import after_cursor, encode_cursor

#: Called after the create transaction commits, with the new outbox id (best-effort fast path).
AfterCommit = Callable[[uuid.UUID], None]


def task_message(task: Task) -> dict[str, str]:
    return {"task_id": str(task.id), "agent_type": task.agent_type}


def _get_owned_task(session: Session, user_id: uuid.UUID, task_id: uuid.UUID, *, with_result: bool) -> Task:
    stmt = select(Task).where(Task.id == task_id, Task.user_id == user_id)
    if with_result:
        stmt = stmt.options(selectinload(Task.result))
    task = session.scalar(stmt)
    if task is None:
        raise NotFoundError("task not found", {"task_id": str(task_id)})
    return task


class TaskService:
    def __init__(self, db: Database, after_commit: AfterCommit | None = None) -> None:
        self.db = db
        self.after_commit = after_commit

    def create(self, user_id: uuid.UUID, req: TaskCreate, meta: RequestMeta) -> Task:
        with self.db.transaction() as session:
            agent = get_owned_agent(session, user_id, req.agent_id)
            if agent.status != "active":
                raise ConflictError("agent is not active", {"agent_id": str(agent.id), "status": agent.status})
            registry.validate_input(agent.type, req.input_data)
            task = Task(user_id=user_id, agent_id=agent.id, agent_type=agent.type, title=req.title,
                        description=req.description, priority=req.priority, input_data=req.input_data,
                        status=TaskStatus.PENDING)
            session.add(task)
            session.flush()
            outbox = OutboxMessage(aggregate_id=task.id, destination=agent.type, payload=task_message(task))
            session.add(outbox)
            audit.record(session, user_id=user_id, event_type="task.created", action="create",
                         resource_type="task", resource_id=task.id,
                         details={"agent_id": str(agent.id), "agent_type": agent.type}, meta=meta)
            session.flush()
            outbox_id = outbox.id
        if self.after_commit is not None:
            self.after_commit(outbox_id)
        return task

    def get(self, user_id: uuid.UUID, task_id: uuid.UUID) -> Task:
        with self.db.read() as session:
            return _get_owned_task(session, user_id, task_id, with_result=True)

    def list(self, user_id: uuid.UUID, query: TaskListQuery, limit: int) -> tuple[list[Task], str | None]:
        """One statement whatever the page size: no per-row loads (results are not listed)."""
        stmt = select(Task).where(Task.user_id == user_id)
        if query.status is not None:
            stmt = stmt.where(Task.status == query.status)
        if query.agent_id is not None:
            stmt = stmt.where(Task.agent_id == query.agent_id)
        if query.priority is not None:
            stmt = stmt.where(Task.priority == query.priority)
        if query.created_after is not None:
            stmt = stmt.where(Task.created_at >= _aware(query.created_after, "created_after"))
        if query.created_before is not None:
            stmt = stmt.where(Task.created_at < _aware(query.created_before, "created_before"))
        if query.cursor:
            stmt = stmt.where(after_cursor(Task.created_at, Task.id, query.cursor))
        stmt = stmt.order_by(Task.created_at.desc(), Task.id.desc()).limit(limit + 1)
        with self.db.read() as session:
            rows = list(session.scalars(stmt))
        next_cursor = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None
        return rows[:limit], next_cursor

    def cancel(self, user_id: uuid.UUID, task_id: uuid.UUID, meta: RequestMeta) -> Task:
        with self.db.transaction() as session:
            task = _get_owned_task(session, user_id, task_id, with_result=True)
            now = utcnow()
            # Conditional update: a consumer finishing at the same moment wins or loses cleanly.
            moved = session.execute(
                update(Task)
                .where(Task.id == task.id, Task.status.in_(CANCELLABLE))
                .values(status=TaskStatus.CANCELLED, completed_at=now, updated_at=now)
                .execution_options(synchronize_session=False)
            ).rowcount
            if not moved:
                raise ConflictError(f"task is already {task.status}", {"status": task.status})
            audit.record(session, user_id=user_id, event_type="task.cancelled", action="cancel",
                         resource_type="task", resource_id=task.id, details={"from": task.status}, meta=meta)
            session.refresh(task, attribute_names=["status", "completed_at", "updated_at"])
        return task


def _aware(value: datetime, field: str) -> datetime:
    if value.tzinfo is None:
        raise ValidationError(f"{field} must include a timezone (e.g. 2026-01-01T00:00:00Z)", {"field": field})
    return value
