"""Agent-to-agent messages: delivery (the communication agent) and the inbox (the API).

The inbox is the `agent_messages` table. A message that cannot be delivered
is never dropped: it is stored with status `undeliverable` and the reason, and
the sending task's result lists it. Another user's agent is treated exactly
like a missing one (same reason, no recipient recorded), so sending reveals
nothing about other users' agents.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from chalicelib.db.models import Agent, AgentMessage
from chalicelib.db.session import Database
from chalicelib.db.types import utcnow
from chalicelib.errors import NotFoundError
from chalicelib.schemas.messages import MessageListQuery, MessagePublic
from chalicelib.services.agents import get_owned_agent
from chalicelib.services.pagination import after_cursor, encode_cursor

DELIVERED = "delivered"
READ = "read"
UNDELIVERABLE = "undeliverable"


@dataclass
class Delivery:
    delivered: list[dict[str, Any]] = field(default_factory=list)
    undeliverable: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Envelope:
    user_id: uuid.UUID
    sender_id: uuid.UUID
    task_id: uuid.UUID
    body: dict[str, Any]
    now: datetime


def _store(session: Session, env: Envelope, recipient: Agent | None, out: Delivery, *, code: str | None = None,
           reason: str | None = None) -> None:
    row = AgentMessage(user_id=env.user_id, sender_agent_id=env.sender_id, task_id=env.task_id, body=env.body,
                       recipient_agent_id=recipient.id if recipient is not None else None, created_at=env.now,
                       status=DELIVERED if code is None else UNDELIVERABLE,
                       error=None if code is None else f"{code}: {reason}")
    session.add(row)
    session.flush()
    target = {"message_id": str(row.id), "recipient_agent_id": str(recipient.id) if recipient else None,
              "recipient_name": recipient.name if recipient else None}
    if code is None:
        out.delivered.append(target)
    else:
        out.undeliverable.append({**target, "code": code, "reason": reason})


def _refusal(agent: Agent) -> tuple[str, str] | None:
    """Why a live row of the sender's own user cannot receive; None when it can (offline agents read later)."""
    if agent.deleted_at is not None:
        return "RECIPIENT_DELETED", "the recipient agent was deleted"
    if agent.status == "inactive":
        return "RECIPIENT_INACTIVE", "the recipient agent is inactive"
    return None


def deliver_to_agent(session: Session, env: Envelope, agent_id: uuid.UUID) -> Delivery:
    out = Delivery()
    agent = session.get(Agent, agent_id)
    if agent is None or agent.user_id != env.user_id:
        _store(session, env, None, out, code="RECIPIENT_NOT_FOUND",
               reason=f"no agent {agent_id} among your agents")
        return out
    refusal = _refusal(agent)
    _store(session, env, agent, out, code=refusal[0] if refusal else None, reason=refusal[1] if refusal else None)
    return out


def sent_by_task(session: Session, task_id: uuid.UUID) -> Delivery | None:
    """What this task already delivered (a rerun after a crash delivers nothing twice); None if nothing."""
    rows = session.execute(
        select(AgentMessage.id, AgentMessage.recipient_agent_id, AgentMessage.status, AgentMessage.error, Agent.name)
        .outerjoin(Agent, Agent.id == AgentMessage.recipient_agent_id)
        .where(AgentMessage.task_id == task_id).order_by(AgentMessage.created_at, AgentMessage.id)
    ).all()
    if not rows:
        return None
    out = Delivery()
    for r in rows:
        target = {"message_id": str(r.id), "recipient_agent_id": str(r.recipient_agent_id) if r.recipient_agent_id
                  else None, "recipient_name": r.name}
        if r.status == UNDELIVERABLE:
            code, _, reason = (r.error or "").partition(": ")
            out.undeliverable.append({**target, "code": code, "reason": reason})
        else:
            out.delivered.append(target)
    return out


def deliver_to_type(session: Session, env: Envelope, agent_type: str) -> Delivery:
    """Every live agent of the type (the sender excepted); inactive ones are reported, one row each."""
    out = Delivery()
    agents = list(session.scalars(
        select(Agent)
        .where(Agent.user_id == env.user_id, Agent.type == agent_type, Agent.deleted_at.is_(None),
               Agent.id != env.sender_id)
        .order_by(Agent.created_at, Agent.id)
    ))
    if not agents:
        _store(session, env, None, out, code="NO_RECIPIENTS_OF_TYPE",
               reason=f"you have no {agent_type!r} agents to deliver to")
    for agent in agents:
        refusal = _refusal(agent)
        _store(session, env, agent, out, code=refusal[0] if refusal else None,
               reason=refusal[1] if refusal else None)
    return out


class MessageService:
    """The inbox: GET /agents/{id}/messages and POST /agents/{id}/messages/{mid}/read."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def inbox(self, user_id: uuid.UUID, agent_id: uuid.UUID, query: MessageListQuery,
              limit: int) -> tuple[list[MessagePublic], str | None]:
        statuses = [DELIVERED] if query.unread else [DELIVERED, READ]
        stmt = select(AgentMessage).where(AgentMessage.recipient_agent_id == agent_id,
                                          AgentMessage.user_id == user_id, AgentMessage.status.in_(statuses))
        if query.cursor:
            stmt = stmt.where(after_cursor(AgentMessage.created_at, AgentMessage.id, query.cursor))
        stmt = stmt.order_by(AgentMessage.created_at.desc(), AgentMessage.id.desc()).limit(limit + 1)
        with self.db.read() as session:
            get_owned_agent(session, user_id, agent_id)
            rows = list(session.scalars(stmt))
        cursor = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None
        return [MessagePublic.model_validate(r) for r in rows[:limit]], cursor

    def mark_read(self, user_id: uuid.UUID, agent_id: uuid.UUID, message_id: uuid.UUID) -> MessagePublic:
        """Idempotent: reading a read message again keeps its first read_at."""
        with self.db.transaction() as session:
            get_owned_agent(session, user_id, agent_id)
            mine = (AgentMessage.id == message_id, AgentMessage.recipient_agent_id == agent_id,
                    AgentMessage.user_id == user_id)
            now = utcnow()
            session.execute(
                update(AgentMessage).where(*mine, AgentMessage.status == DELIVERED)
                .values(status=READ, read_at=now).execution_options(synchronize_session=False)
            )
            row = session.scalar(select(AgentMessage).where(*mine, AgentMessage.status.in_([DELIVERED, READ]))
                                 .execution_options(populate_existing=True))
            if row is None:
                raise NotFoundError("message not found", {"message_id": str(message_id)})
            return MessagePublic.model_validate(row)
