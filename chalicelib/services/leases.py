"""The task queue of external agents, in Postgres: lease, heartbeat, and the lease reaper.

Tasks of an external agent wait in `queued` (they never go to SQS). A lease is one
conditional UPDATE of rows picked with `FOR UPDATE SKIP LOCKED`, so concurrent
leases (several worker processes sharing an agent) never hand out the same task,
and never wait on each other's rows. A per-agent transaction-level advisory lock
makes "how many tasks does this agent hold" and "take that many more" one step,
so `max_concurrency` holds under concurrency too. SQLite (the embedded local
runtime) has no row locks to skip: its BEGIN IMMEDIATE serialises writers.

Long polling re-runs the short lease transaction every `poll_seconds` until a task
is leased or the wait is over; no connection or lock is held while waiting.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select, text, update
from sqlalchemy.orm import Session

from chalicelib.db.models import Agent, Task
from chalicelib.db.session import Database
from chalicelib.db.types import utcnow
from chalicelib.domain.agents import AgentStatus
from chalicelib.domain.leases import LEASE_EXPIRED, PRIORITY_ORDER, AgentMode, Expiry, on_expiry
from chalicelib.domain.tasks import CLAIMABLE, TaskStatus
from chalicelib.errors import AgentInactiveError, NotFoundError
from chalicelib.observability import logger
from chalicelib.schemas.workers import HeartbeatResponse, LeasedTask, LeaseInfo, LeaseResponse
from chalicelib.services.results import store_outcome

_PRIORITY_RANK = case(PRIORITY_ORDER, value=Task.priority, else_=len(PRIORITY_ORDER))


@dataclass(frozen=True)
class ReapReport:
    requeued: int = 0
    failed: int = 0
    cancelled: int = 0


def _ms(start: datetime | None, end: datetime) -> float:
    return round((end - start).total_seconds() * 1000, 3) if start is not None else 0.0


class LeaseService:
    def __init__(self, db: Database, *, lease_seconds: int, max_attempts: int, poll_seconds: float = 0.5,
                 reap_batch: int = 100, sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.poll_seconds = poll_seconds
        self.reap_batch = reap_batch
        self._sleep = sleep
        self._monotonic = monotonic

    # -- lease ------------------------------------------------------------------------------------

    def lease(self, agent_id: uuid.UUID, max_tasks: int, wait_seconds: float) -> LeaseResponse:
        """Lease up to `max_tasks` of the agent's queued tasks, waiting up to `wait_seconds` for one."""
        self._reap_opportunistically()
        deadline = self._monotonic() + wait_seconds
        with self.db.transaction() as session:
            self._touch(session, agent_id, utcnow(), require_active=True)
        while True:
            tasks, in_flight, max_concurrency = self._lease_once(agent_id, max_tasks)
            remaining = deadline - self._monotonic()
            if tasks or remaining <= 0:
                return LeaseResponse(tasks=tasks, lease_seconds=self.lease_seconds, in_flight=in_flight,
                                     max_concurrency=max_concurrency)
            self._sleep(min(self.poll_seconds, remaining))

    def _lease_once(self, agent_id: uuid.UUID, max_tasks: int) -> tuple[list[LeasedTask], int, int]:
        with self.db.transaction() as session:
            if session.get_bind().dialect.name == "postgresql":
                # Serialises leases of ONE agent (count, then take) without touching the agents row,
                # which feedback and heartbeats update.
                session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                                {"key": f"ymera:lease:{agent_id}"})
            agent = session.execute(
                select(Agent.status, Agent.max_concurrency).where(Agent.id == agent_id, Agent.deleted_at.is_(None))
            ).first()
            if agent is None:
                raise NotFoundError("agent not found", {"agent_id": str(agent_id)})
            if agent.status == AgentStatus.INACTIVE:
                raise AgentInactiveError("agent is inactive; activate it to lease tasks",
                                         {"agent_id": str(agent_id), "status": agent.status})
            in_flight = session.scalar(select(func.count()).select_from(Task).where(
                Task.agent_id == agent_id, Task.status == TaskStatus.PROCESSING)) or 0
            room = min(max_tasks, agent.max_concurrency - in_flight)
            if room <= 0:
                return [], in_flight, agent.max_concurrency
            ids = list(session.scalars(
                select(Task.id)
                .where(Task.agent_id == agent_id, Task.status.in_(CLAIMABLE))
                .order_by(_PRIORITY_RANK, Task.created_at, Task.id)
                .limit(room)
                .with_for_update(skip_locked=True)
            ))
            if not ids:
                return [], in_flight, agent.max_concurrency
            now = utcnow()
            # Only rows this UPDATE moved are handed out (the lock makes that all of them; this keeps it so).
            ids = list(session.scalars(
                update(Task)
                .where(Task.id.in_(ids), Task.status.in_(CLAIMABLE))
                .values(status=TaskStatus.PROCESSING, attempts=Task.attempts + 1, started_at=now, updated_at=now,
                        lease_expires_at=now + timedelta(seconds=self.lease_seconds))
                .returning(Task.id)
                .execution_options(synchronize_session=False)
            ))
            rows = session.scalars(
                select(Task).where(Task.id.in_(ids)).order_by(_PRIORITY_RANK, Task.created_at, Task.id)
                .execution_options(populate_existing=True)
            ).all()
            leased = [LeasedTask.model_validate(row, from_attributes=True) for row in rows]
        logger.info("tasks leased", extra={"agent_id": str(agent_id), "task_ids": [str(t.id) for t in leased]})
        return leased, in_flight + len(leased), agent.max_concurrency

    # -- heartbeat --------------------------------------------------------------------------------

    def heartbeat(self, agent_id: uuid.UUID) -> HeartbeatResponse:
        """The worker is alive: record it and extend every lease it holds by `lease_seconds` from now."""
        now = utcnow()
        with self.db.transaction() as session:
            self._touch(session, agent_id, now, require_active=False)
            rows = session.execute(
                update(Task)
                .where(Task.agent_id == agent_id, Task.status == TaskStatus.PROCESSING,
                       Task.lease_expires_at.is_not(None))
                .values(lease_expires_at=now + timedelta(seconds=self.lease_seconds), updated_at=now)
                .returning(Task.id, Task.lease_expires_at)
                .execution_options(synchronize_session=False)
            ).all()
        tasks = sorted((LeaseInfo(task_id=r.id, lease_expires_at=r.lease_expires_at) for r in rows),
                       key=lambda info: str(info.task_id))
        return HeartbeatResponse(agent_id=agent_id, last_heartbeat=now, lease_seconds=self.lease_seconds, tasks=tasks)

    def _touch(self, session: Session, agent_id: uuid.UUID, now: datetime, *, require_active: bool) -> None:
        """Record a sign of life; an agent marked offline for a stale heartbeat is active again."""
        status = session.scalar(select(Agent.status).where(Agent.id == agent_id, Agent.deleted_at.is_(None)))
        if status is None:
            raise NotFoundError("agent not found", {"agent_id": str(agent_id)})
        if require_active and status == AgentStatus.INACTIVE:
            raise AgentInactiveError("agent is inactive; activate it to lease tasks",
                                     {"agent_id": str(agent_id), "status": status})
        revived = case((Agent.status == AgentStatus.OFFLINE, AgentStatus.ACTIVE.value), else_=Agent.status)
        # updated_at is kept: a heartbeat is not a change to the agent's definition.
        session.execute(update(Agent).where(Agent.id == agent_id)
                        .values(last_heartbeat=now, status=revived, updated_at=Agent.updated_at))

    # -- reaper -----------------------------------------------------------------------------------

    def _reap_opportunistically(self) -> None:
        try:
            self.reap()
        except Exception:  # noqa: BLE001 - housekeeping must not block leasing; the scheduled reaper retries
            logger.warning("lease reaping before a lease failed; the scheduled reaper will retry", exc_info=True)

    def reap(self, now: datetime | None = None) -> ReapReport:
        """Take back leases that passed without a heartbeat: requeue, or fail once attempts are used up."""
        now = now or utcnow()
        with self.db.transaction() as session:
            rows = session.execute(
                select(Task.id, Task.attempts, Task.started_at, Task.lease_expires_at, Agent.deleted_at)
                .join(Agent, Agent.id == Task.agent_id)
                .where(Task.status == TaskStatus.PROCESSING, Task.lease_expires_at.is_not(None),
                       Task.lease_expires_at < now, Agent.mode == AgentMode.EXTERNAL)
                .order_by(Task.lease_expires_at)
                .limit(self.reap_batch)
                .with_for_update(of=Task, skip_locked=True)
            ).all()
            if not rows:
                return ReapReport()
            orphaned = [r.id for r in rows if r.deleted_at is not None]
            requeue = [r.id for r in rows if r.deleted_at is None
                       and on_expiry(r.attempts, self.max_attempts) == Expiry.REQUEUE]
            exhausted = [r for r in rows if r.deleted_at is None and r.id not in requeue]
            if requeue:
                self._move(session, requeue, status=TaskStatus.QUEUED, lease_expires_at=None, updated_at=now)
            if orphaned:  # the agent was deleted while its worker held these: nobody can lease them again
                self._move(session, orphaned, status=TaskStatus.CANCELLED, lease_expires_at=None, updated_at=now,
                           completed_at=now, error={"code": "AGENT_DELETED", "message": "the agent was deleted"})
            for row in exhausted:
                error = {"code": LEASE_EXPIRED,
                         "message": "the worker's lease expired without a heartbeat on the last attempt",
                         "details": {"attempts": row.attempts, "max_attempts": self.max_attempts,
                                     "lease_expired_at": row.lease_expires_at.isoformat()}}
                store_outcome(session, row.id, TaskStatus.FAILED, {}, {"duration_ms": _ms(row.started_at, now)},
                              error, now)
        report = ReapReport(requeued=len(requeue), failed=len(exhausted), cancelled=len(orphaned))
        logger.info("expired leases reaped", extra={"requeued": report.requeued, "failed": report.failed,
                                                    "cancelled": report.cancelled})
        return report

    @staticmethod
    def _move(session: Session, ids: list[uuid.UUID], **values: Any) -> None:
        session.execute(update(Task).where(Task.id.in_(ids), Task.status == TaskStatus.PROCESSING).values(**values)
                        .execution_options(synchronize_session=False))
