"""GET /admin/dlq and POST /admin/dlq/{queue}/redrive: dead letters of the agent queues, for admins.

A queue is named by its agent type (`validation` → `<prefix>-agent-validation-dlq`). Each sampled message
carries the task it names with that task's status and last error (one query for the whole answer). A redrive
is audited (`admin.dlq_redriven`); messages of tasks that already finished are no-ops when consumed again
(the consumer claims only `pending`/`queued` tasks, or a `processing` one whose lease has passed).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from chalicelib.db.models import Task
from chalicelib.db.session import Database
from chalicelib.domain import rbac
from chalicelib.domain.rbac import Permission
from chalicelib.errors import NotFoundError
from chalicelib.messaging.dlq import DlqOperator, DlqPeek, RedriveOutcome
from chalicelib.services import audit
from chalicelib.services.meta import RequestMeta

if TYPE_CHECKING:
    from chalicelib.auth.tokens import Claims


@dataclass(frozen=True)
class TaskState:
    status: str
    error: dict[str, Any] | None


class DlqAdminService:
    def __init__(self, db: Database, operator: DlqOperator, agent_types: Callable[[], Sequence[str]]) -> None:
        self.db = db
        self.operator = operator
        self.agent_types = agent_types

    def inspect(self, actor: Claims, sample: int) -> tuple[list[DlqPeek], dict[uuid.UUID, TaskState]]:
        rbac.require(actor.role, Permission.DLQ_MANAGE)
        peeks = [self.operator.peek(agent_type, sample) for agent_type in self.agent_types()]
        ids = {m.task_id for p in peeks for m in p.messages if m.task_id is not None}
        states: dict[uuid.UUID, TaskState] = {}
        if ids:
            with self.db.read() as session:
                states = {row.id: TaskState(row.status, row.error) for row in session.execute(
                    select(Task.id, Task.status, Task.error).where(Task.id.in_(ids)))}
        return peeks, states

    def redrive(self, actor: Claims, agent_type: str, limit: int, meta: RequestMeta) -> RedriveOutcome:
        rbac.require(actor.role, Permission.DLQ_MANAGE)
        if agent_type not in self.agent_types():
            raise NotFoundError("no such queue", {"queue": agent_type, "available": list(self.agent_types())})
        with self.db.transaction() as session:
            outcome = self.operator.redrive(agent_type, limit)
            audit.record(session, user_id=actor.user_id, event_type="admin.dlq_redriven", action="redrive",
                         resource_type="queue", resource_id=agent_type,
                         details={"method": outcome.method, "moved": outcome.moved,
                                  "approximate": outcome.approximate, "limit": limit}, meta=meta)
        return outcome
