"""Agent management. Every query is scoped to the owner: another user's agent is 404."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from chalicelib.agents import registry
from chalicelib.db.models import Agent, Task
from chalicelib.db.session import Database
from chalicelib.db.types import utcnow
from chalicelib.domain.tasks import TaskStatus
from chalicelib.errors import NotFoundError, ValidationError
from chalicelib.schemas.agents import AgentCreate, AgentUpdate
from chalicelib.services import audit
from chalicelib.services.meta import RequestMeta
from chalicelib.services.pagination import after_cursor, encode_cursor


def get_owned_agent(session: Session, user_id: uuid.UUID, agent_id: uuid.UUID) -> Agent:
    agent = session.scalar(
        select(Agent).where(Agent.id == agent_id, Agent.user_id == user_id, Agent.deleted_at.is_(None))
    )
    if agent is None:
        raise NotFoundError("agent not found", {"agent_id": str(agent_id)})
    return agent


class AgentService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, user_id: uuid.UUID, req: AgentCreate, meta: RequestMeta) -> Agent:
        if req.type not in registry.available_types():
            raise ValidationError(
                f"agent type {req.type!r} is not available yet",
                {"field": "type", "available_types": list(registry.available_types())},
            )
        registry.validate_config(req.type, req.config)
        with self.db.transaction() as session:
            agent = Agent(user_id=user_id, name=req.name, type=req.type, capabilities=req.capabilities,
                          meta=req.metadata, config=req.config, status="active")
            session.add(agent)
            session.flush()
            audit.record(session, user_id=user_id, event_type="agent.created", action="create",
                         resource_type="agent", resource_id=agent.id, details={"type": req.type}, meta=meta)
        return agent

    def get(self, user_id: uuid.UUID, agent_id: uuid.UUID) -> Agent:
        with self.db.read() as session:
            return get_owned_agent(session, user_id, agent_id)

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
            cancelled = session.execute(
                update(Task)
                .where(Task.agent_id == agent.id, Task.status.in_([TaskStatus.PENDING, TaskStatus.QUEUED]))
                .values(status=TaskStatus.CANCELLED, completed_at=now, updated_at=now,
                        error={"code": "AGENT_DELETED", "message": "the agent was deleted"})
            ).rowcount
            audit.record(session, user_id=user_id, event_type="agent.deleted", action="delete",
                         resource_type="agent", resource_id=agent.id,
                         details={"cancelled_tasks": cancelled}, meta=meta)
