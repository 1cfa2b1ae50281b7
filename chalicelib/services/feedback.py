"""POST /tasks/{id}/feedback: store a rating and make sure it gets counted.

The feedback row (processed_at NULL) is the durable record; in the same
transaction, when the owner has a managed learning agent, a learning task for
it is created with its outbox row. Whatever happens to that task, the
platform's scheduled sweep folds every row still unprocessed, so a rating is
counted at least once — and, because folding stamps processed_at under a row
lock, at most once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from chalicelib.db.models import Agent, OutboxMessage, Task, TaskFeedback
from chalicelib.db.session import Database
from chalicelib.domain.tasks import TERMINAL, TaskStatus
from chalicelib.errors import ConflictError, NotFoundError
from chalicelib.schemas.feedback import FeedbackCreate, FeedbackCreated, FeedbackPublic
from chalicelib.services import audit
from chalicelib.services.meta import RequestMeta

LEARNING = "learning"


def _owned_task(session: Session, user_id: uuid.UUID, task_id: uuid.UUID) -> Task:
    task = session.scalar(select(Task).where(Task.id == task_id, Task.user_id == user_id))
    if task is None:
        raise NotFoundError("task not found", {"task_id": str(task_id)})
    return task


def _learner(session: Session, user_id: uuid.UUID) -> Agent | None:
    """The owner's oldest active managed learning agent (external ones run their own code, not ours)."""
    return session.scalar(
        select(Agent)
        .where(Agent.user_id == user_id, Agent.type == LEARNING, Agent.status == "active",
               Agent.deleted_at.is_(None), Agent.mode == "managed")
        .order_by(Agent.created_at, Agent.id)
        .limit(1)
    )


class FeedbackService:
    def __init__(self, db: Database, after_commit: Callable[[uuid.UUID], None] | None = None) -> None:
        self.db = db
        self.after_commit = after_commit

    def submit(self, user_id: uuid.UUID, task_id: uuid.UUID, req: FeedbackCreate,
               meta: RequestMeta) -> FeedbackCreated:
        outbox_id: uuid.UUID | None = None
        with self.db.transaction() as session:
            task = _owned_task(session, user_id, task_id)
            if task.status not in TERMINAL:
                raise ConflictError("a task can be rated once it has finished",
                                    {"task_id": str(task.id), "status": task.status})
            existing = session.scalar(select(TaskFeedback.id).where(TaskFeedback.task_id == task.id,
                                                                    TaskFeedback.user_id == user_id))
            if existing is not None:
                raise ConflictError("you already rated this task", {"feedback_id": str(existing)})
            feedback = TaskFeedback(task_id=task.id, agent_id=task.agent_id, user_id=user_id, rating=req.rating,
                                    comment=req.comment)
            session.add(feedback)
            try:
                with session.begin_nested():  # a concurrent duplicate loses on the unique constraint
                    session.flush()
            except IntegrityError as exc:
                raise ConflictError("you already rated this task", {"task_id": str(task.id)}) from exc
            learner = _learner(session, user_id)
            learning_task_id = None
            if learner is not None:
                learning = Task(user_id=user_id, agent_id=learner.id, agent_type=LEARNING,
                                title=f"Count the rating of task {task.id}"[:200], priority="low",
                                input_data={"feedback_ids": [str(feedback.id)]}, status=TaskStatus.PENDING)
                session.add(learning)
                session.flush()
                outbox = OutboxMessage(aggregate_id=learning.id, destination=LEARNING,
                                       payload={"task_id": str(learning.id), "agent_type": LEARNING})
                session.add(outbox)
                session.flush()
                learning_task_id, outbox_id = learning.id, outbox.id
            audit.record(session, user_id=user_id, event_type="task.feedback", action="create",
                         resource_type="task", resource_id=task.id,
                         details={"rating": req.rating, "agent_id": str(task.agent_id),
                                  "learning_task_id": str(learning_task_id) if learning_task_id else None},
                         meta=meta)
            created = FeedbackCreated.model_validate(feedback).model_copy(update={"learning_task_id": learning_task_id})
        if outbox_id is not None and self.after_commit is not None:
            self.after_commit(outbox_id)
        return created

    def get(self, user_id: uuid.UUID, task_id: uuid.UUID) -> FeedbackPublic:
        with self.db.read() as session:
            _owned_task(session, user_id, task_id)
            feedback = session.scalar(select(TaskFeedback).where(TaskFeedback.task_id == task_id,
                                                                 TaskFeedback.user_id == user_id))
            if feedback is None:
                raise NotFoundError("this task has no feedback from you", {"task_id": str(task_id)})
            return FeedbackPublic.model_validate(feedback)
