"""Agent management. Every query is scoped to the owner: another user's agent is 404."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from chalicelib.agents import registry
from chalicelib.auth import agent_keys
from chalicelib.cache.namespaces import Namespace
from chalicelib.db.models import Agent, Task
from chalicelib.db.session import Database, rowcount
from chalicelib.db.types import utcnow
from chalicelib.domain.leases import AgentMode
from chalicelib.domain.tasks import TaskStatus
from chalicelib.errors import NotFoundError, ValidationError
from chalicelib.schemas.agents import AgentCreate, AgentPublic, AgentUpdate
from chalicelib.services import audit
from chalicelib.services.meta import RequestMeta
from chalicelib.services.pagination import after_cursor, encode_cursor

if TYPE_CHECKING:
    from chalicelib.cache.twolevel import TwoLevelCache
    from chalicelib.services.quotas import Quotas


class AgentRecord(AgentPublic):
    """A live agent as cached: the public view plus its owner, checked on every cached read.

    Every field must come from the `agents` row: only writes to that table invalidate it.
    """

    model_config = ConfigDict(from_attributes=True, populate_by_name=True)

    user_id: uuid.UUID

    def public(self) -> AgentPublic:
        # Already validated: construct skips a second validation on the hot read path.
        return AgentPublic.model_construct(**{name: getattr(self, name) for name in AgentPublic.model_fields})


def load_agent_record(session: Session, agent_id: uuid.UUID) -> AgentRecord | None:
    agent = session.scalar(select(Agent).where(Agent.id == agent_id, Agent.deleted_at.is_(None)))
    return AgentRecord.model_validate(agent) if agent is not None else None


def get_owned_agent(session: Session, user_id: uuid.UUID, agent_id: uuid.UUID) -> Agent:
    agent = session.scalar(
        select(Agent).where(Agent.id == agent_id, Agent.user_id == user_id, Agent.deleted_at.is_(None))
    )
    if agent is None:
        raise NotFoundError("agent not found", {"agent_id": str(agent_id)})
    return agent


class AgentService:
    def __init__(self, db: Database, cache: TwoLevelCache | None = None, quotas: Quotas | None = None) -> None:
        self.db = db
        self.cache = cache
        self.quotas = quotas

    def create(self, user_id: uuid.UUID, req: AgentCreate, meta: RequestMeta) -> Agent:
        return self.create_with_key(user_id, req, meta)[0]

    def create_with_key(self, user_id: uuid.UUID, req: AgentCreate, meta: RequestMeta) -> tuple[Agent, str | None]:
        """The new agent and, for an external agent, its API key: returned once, only its sha256 is stored."""
        if req.type not in registry.available_types():
            raise ValidationError(
                f"agent type {req.type!r} is not available yet",
                {"field": "type", "available_types": list(registry.available_types())},
            )
        if self.quotas is not None:
            self.quotas.check_agent_json({"metadata": req.metadata, "config": req.config})
        registry.validate_config(req.type, req.config)
        api_key = agent_keys.new_key() if req.mode == AgentMode.EXTERNAL else None
        with self.db.transaction() as session:
            if self.quotas is not None:
                self.quotas.reserve_agent(session, user_id)
            agent = Agent(user_id=user_id, name=req.name, type=req.type, capabilities=req.capabilities,
                          meta=req.metadata, config=req.config, status="active", mode=req.mode,
                          max_concurrency=req.max_concurrency,
                          api_key_hash=agent_keys.hash_key(api_key) if api_key else None)
            session.add(agent)
            session.flush()
            audit.record(session, user_id=user_id, event_type="agent.created", action="create",
                         resource_type="agent", resource_id=agent.id, details={"type": req.type, "mode": req.mode},
                         meta=meta)
        return agent, api_key

    def get(self, user_id: uuid.UUID, agent_id: uuid.UUID) -> AgentPublic:
        return self.owned_record(user_id, agent_id).public()

    def owned_record(self, user_id: uuid.UUID, agent_id: uuid.UUID) -> AgentRecord:
        """The caller's live agent, cached; another user's agent is 404 like a missing one."""
        record = self.record(agent_id)
        if record is None or record.user_id != user_id:
            raise NotFoundError("agent not found", {"agent_id": str(agent_id)})
        return record

    def record(self, agent_id: uuid.UUID, session: Session | None = None) -> AgentRecord | None:
        """A live agent from the cache or the database (in `session` if given). No ownership check.

        No writer invalidates by hand: every committed write to `agents` (here, heartbeats, the
        watchdog, quality updates) bumps the entry's version (chalicelib.cache.tracking).
        """

        def load() -> AgentRecord | None:
            if session is not None:
                return load_agent_record(session, agent_id)
            with self.db.read() as own:
                return load_agent_record(own, agent_id)

        if self.cache is None:
            return load()
        return self.cache.fetch(Namespace.AGENTS, str(agent_id), AgentRecord, load)

    def list(self, user_id: uuid.UUID, limit: int, cursor: str | None) -> tuple[list[Agent], str | None]:
        stmt = select(Agent).where(Agent.user_id == user_id, Agent.deleted_at.is_(None))
        if cursor:
            stmt = stmt.where(after_cursor(Agent.created_at, Agent.id, cursor))
        stmt = stmt.order_by(Agent.created_at.desc(), Agent.id.desc()).limit(limit + 1)
        with self.db.read() as session:
            rows = list(session.scalars(stmt))
        next_cursor = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None
        return rows[:limit], next_cursor

    def update(self, user_id: uuid.UUID, agent_id: uuid.UUID, req: AgentUpdate, meta: RequestMeta) -> Agent:
        changes: dict[str, Any] = req.model_dump(exclude_unset=True)
        if not changes:
            raise ValidationError("the update body sets no field", {"fields": list(AgentUpdate.model_fields)})
        null_fields = [k for k, v in changes.items() if v is None]
        if null_fields:
            raise ValidationError("fields cannot be set to null", {"fields": null_fields})
        if self.quotas is not None:
            self.quotas.check_agent_json({k: changes[k] for k in ("metadata", "config") if k in changes})
        with self.db.transaction() as session:
            agent = get_owned_agent(session, user_id, agent_id)
            if "config" in changes:
                registry.validate_config(agent.type, changes["config"])
            for key, value in changes.items():
                setattr(agent, "meta" if key == "metadata" else key, value)
            agent.updated_at = utcnow()
            audit.record(session, user_id=user_id, event_type="agent.updated", action="update",
                         resource_type="agent", resource_id=agent.id,
                         details={"fields": sorted(changes)}, meta=meta)
        return agent

    def delete(self, user_id: uuid.UUID, agent_id: uuid.UUID, meta: RequestMeta) -> None:
        """Soft delete: the agent disappears, its task history stays; waiting tasks are cancelled."""
        with self.db.transaction() as session:
            agent = get_owned_agent(session, user_id, agent_id)
            now = utcnow()
            agent.deleted_at = now
            agent.status = "inactive"
            cancelled = rowcount(session.execute(
                update(Task)
                .where(Task.agent_id == agent.id, Task.status.in_([TaskStatus.PENDING, TaskStatus.QUEUED]))
                .values(status=TaskStatus.CANCELLED, completed_at=now, updated_at=now,
                        error={"code": "AGENT_DELETED", "message": "the agent was deleted"})
            ))
            if cancelled:
                from chalicelib.workflows.plan_outcome import on_task_ended
                from chalicelib.workflows.steps import on_task_finished as on_step_finished

                # Orchestrator tasks among them (a rerun waiting in the queue): their plan runs are cancelled.
                for parent in list(session.scalars(select(Task.id).where(
                        Task.agent_id == agent.id, Task.status == TaskStatus.CANCELLED, Task.completed_at == now,
                        Task.agent_type == "orchestrator"))):
                    on_task_ended(session, parent, {"code": "PARENT_CANCELLED", "message": "the agent was deleted"})
                # Workflow steps among them (orchestrator plans' steps too): their tokens are failed now instead of
                # timing out, and their runs (and orchestrator tasks) fail.
                for step_task in list(session.scalars(select(Task.id).where(
                        Task.agent_id == agent.id, Task.status == TaskStatus.CANCELLED, Task.completed_at == now,
                        Task.callback_token.is_not(None)))):
                    on_step_finished(session, step_task)
            audit.record(session, user_id=user_id, event_type="agent.deleted", action="delete",
                         resource_type="agent", resource_id=agent.id,
                         details={"cancelled_tasks": cancelled}, meta=meta)
