"""External agents (self-hosted workers): their API key, and what a worker may do with it.

A worker authenticates with its agent's API key (`X-Agent-Key`) and names the agent
(`X-Agent-Id`, or the agent id in the path). Any mismatch — unknown, deleted or managed
agent, wrong key, deactivated owner — is the same 401, so the answer reveals nothing.
A user's JWT is never accepted here: a worker holds a key scoped to one agent, not
the user's whole account.

Completing or failing a task requires holding it: the task is this agent's (else 404,
as another user's task would be) and in `processing` (else 409 LEASE_NOT_HELD). The
optional `attempt` fences off a worker whose lease expired and was handed out again.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from chalicelib.auth import agent_keys
from chalicelib.db.models import Agent, Task, User
from chalicelib.db.session import Database
from chalicelib.db.types import utcnow
from chalicelib.domain.leases import AgentMode, may_retry
from chalicelib.domain.tasks import TaskStatus
from chalicelib.errors import AuthenticationError, ConflictError, LeaseNotHeldError, NotFoundError
from chalicelib.schemas.workers import (
    AgentKeyPublic,
    AgentStatusPublic,
    CompleteRequest,
    FailRequest,
    HeartbeatResponse,
    InFlightTask,
    LeaseRequest,
    LeaseResponse,
    TaskOutcomePublic,
)
from chalicelib.services import audit
from chalicelib.services.agents import get_owned_agent
from chalicelib.services.leases import LeaseService
from chalicelib.services.meta import RequestMeta
from chalicelib.services.results import store_outcome

#: compared against when the agent does not exist, so a miss costs what a hit costs.
_DUMMY_HASH = agent_keys.hash_key("ymk_no-such-agent")
#: in-flight tasks listed by the status endpoint (an external agent holds at most max_concurrency).
STATUS_IN_FLIGHT_LIMIT = 100


class WorkerService:
    def __init__(self, db: Database, leases: LeaseService, *, max_attempts: int,
                 answers: Callable[[list[uuid.UUID]], None] | None = None) -> None:
        # No cache invalidation here: chalicelib.cache.tracking bumps a cached agent after any committed
        # write to its row (heartbeats, revived status, a rotated key).
        self.db = db
        self.leases = leases
        self.max_attempts = max_attempts
        #: publishes the workflow token answers an outcome wrote (outbox fast path), right after its commit.
        self.answers = answers

    # -- worker calls (agent key) -----------------------------------------------------------------

    def authenticate(self, agent_id: uuid.UUID | None, key: str | None) -> uuid.UUID:
        with self.db.read() as session:
            row = session.execute(
                select(Agent.id, Agent.api_key_hash)
                .join(User, User.id == Agent.user_id)
                .where(Agent.id == agent_id, Agent.deleted_at.is_(None), Agent.mode == AgentMode.EXTERNAL,
                       User.is_active.is_(True))
            ).first() if agent_id is not None else None
        stored = row.api_key_hash if row is not None else None
        if not agent_keys.matches(stored or _DUMMY_HASH, key) or row is None or stored is None:
            raise AuthenticationError("invalid agent credentials")
        return uuid.UUID(str(row.id))

    def lease(self, agent: uuid.UUID, req: LeaseRequest) -> LeaseResponse:
        """`agent` is an authenticated agent id (`authenticate`), as for every worker call below."""
        return self.leases.lease(agent, req.max_tasks, req.wait_seconds)

    def heartbeat(self, agent: uuid.UUID) -> HeartbeatResponse:
        return self.leases.heartbeat(agent)

    def complete(self, task_id: uuid.UUID, agent: uuid.UUID, req: CompleteRequest) -> TaskOutcomePublic:
        with self.db.transaction() as session:
            task = _held_task(session, task_id, agent, req.attempt)
            now = utcnow()
            elapsed = round((now - task.started_at).total_seconds() * 1000, 3) if task.started_at else 0.0
            # The worker's own measurements win over ours (it knows its real processing time).
            store_outcome(session, task.id, TaskStatus.COMPLETED, req.output_data,
                          {"duration_ms": elapsed, **req.metrics}, None, now)
            attempts = task.attempts
        self._publish_answers(session)
        return TaskOutcomePublic(task_id=task_id, status=TaskStatus.COMPLETED, attempts=attempts, error=None)

    def _publish_answers(self, session: Session) -> None:
        """A workflow step's outcome answered its token in that transaction: send it now, not at the next sweep."""
        from chalicelib.workflows.runstate import committed_answers

        ids = committed_answers(session)
        if ids and self.answers is not None:
            self.answers(ids)

    def fail(self, task_id: uuid.UUID, agent: uuid.UUID, req: FailRequest) -> TaskOutcomePublic:
        error = req.error.model_dump(mode="json")
        with self.db.transaction() as session:
            task = _held_task(session, task_id, agent, req.attempt)
            now = utcnow()
            attempts = task.attempts
            if req.retryable and may_retry(attempts, self.max_attempts):
                # Back in the queue for the next lease; the error stays visible until then.
                session.execute(update(Task).where(Task.id == task.id, Task.status == TaskStatus.PROCESSING)
                                .values(status=TaskStatus.QUEUED, lease_expires_at=None, error=error, updated_at=now)
                                .execution_options(synchronize_session=False))
                status = TaskStatus.QUEUED
            else:
                elapsed = round((now - task.started_at).total_seconds() * 1000, 3) if task.started_at else 0.0
                store_outcome(session, task.id, TaskStatus.FAILED, {}, {"duration_ms": elapsed}, error, now)
                status = TaskStatus.FAILED
        self._publish_answers(session)
        return TaskOutcomePublic(task_id=task_id, status=status, attempts=attempts, error=error)

    # -- owner calls (JWT) ------------------------------------------------------------------------

    def rotate_key(self, user_id: uuid.UUID, agent_id: uuid.UUID, meta: RequestMeta) -> AgentKeyPublic:
        """A new key for an external agent; the old one stops working at once."""
        key = agent_keys.new_key()
        now = utcnow()
        with self.db.transaction() as session:
            agent = get_owned_agent(session, user_id, agent_id)
            if agent.mode != AgentMode.EXTERNAL:
                raise ConflictError("only external agents have an API key", {"mode": agent.mode})
            agent.api_key_hash = agent_keys.hash_key(key)
            agent.updated_at = now
            audit.record(session, user_id=user_id, event_type="agent.api_key_rotated", action="update",
                         resource_type="agent", resource_id=agent.id, details={}, meta=meta)
        return AgentKeyPublic(agent_id=agent_id, api_key=key, rotated_at=now)

    def status(self, user_id: uuid.UUID, agent_id: uuid.UUID) -> AgentStatusPublic:
        with self.db.read() as session:
            agent = get_owned_agent(session, user_id, agent_id)
            in_flight = session.execute(
                select(Task.id, Task.attempts, Task.started_at, Task.lease_expires_at)
                .where(Task.agent_id == agent.id, Task.status == TaskStatus.PROCESSING)
                .order_by(Task.started_at, Task.id).limit(STATUS_IN_FLIGHT_LIMIT)
            ).all()
            counts = dict(session.execute(  # type: ignore[arg-type]
                select(Task.status, func.count()).where(Task.agent_id == agent.id).group_by(Task.status)
            ).all())
        return AgentStatusPublic(
            agent_id=agent.id, type=agent.type, mode=agent.mode, status=agent.status,
            last_heartbeat=agent.last_heartbeat, max_concurrency=agent.max_concurrency,
            in_flight=[InFlightTask(task_id=r.id, attempts=r.attempts, started_at=r.started_at,
                                    lease_expires_at=r.lease_expires_at) for r in in_flight],
            task_counts={status.value: int(counts.get(status.value, 0)) for status in TaskStatus},
        )


def _held_task(session: Session, task_id: uuid.UUID, agent_id: uuid.UUID, attempt: int | None) -> Task:
    """The task, locked, if this agent holds its lease; the reaper skips it while we decide."""
    task = session.scalar(select(Task).where(Task.id == task_id).with_for_update())
    if task is None or task.agent_id != agent_id:
        raise NotFoundError("task not found", {"task_id": str(task_id)})
    if task.status != TaskStatus.PROCESSING:
        raise LeaseNotHeldError(f"the task is {task.status}; this agent holds no lease on it",
                                {"task_id": str(task_id), "status": task.status})
    if attempt is not None and attempt != task.attempts:
        raise LeaseNotHeldError("the lease was replaced: the task was leased again after this attempt",
                                {"task_id": str(task_id), "status": task.status, "attempt": attempt,
                                 "current_attempt": task.attempts})
    return task
