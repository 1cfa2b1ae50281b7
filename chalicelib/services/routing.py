"""Routing a task sent to an agent type: load the caller's agents of the type with their load,
let `chalicelib.domain.routing.choose` decide, and say why when nobody can take it."""

from __future__ import annotations

import uuid

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from chalicelib.db.models import Agent, Task
from chalicelib.domain.routing import Candidate, Decision, choose
from chalicelib.domain.tasks import TaskStatus
from chalicelib.errors import NoAgentAvailableError


def candidates(session: Session, user_id: uuid.UUID, agent_type: str) -> list[Candidate]:
    """Every live agent of the type with its in-flight and waiting task counts: one statement."""
    load = (
        select(
            Task.agent_id,
            func.sum(case((Task.status == TaskStatus.PROCESSING, 1), else_=0)).label("in_flight"),
            func.sum(case((Task.status.in_([TaskStatus.PENDING, TaskStatus.QUEUED]), 1), else_=0)).label("backlog"),
        )
        .where(Task.user_id == user_id, Task.agent_type == agent_type,
               Task.status.in_([TaskStatus.PENDING, TaskStatus.QUEUED, TaskStatus.PROCESSING]))
        .group_by(Task.agent_id)
        .subquery()
    )
    rows = session.execute(
        select(Agent.id, Agent.status, Agent.max_concurrency, Agent.quality_alpha, Agent.quality_beta,
               Agent.created_at, func.coalesce(load.c.in_flight, 0), func.coalesce(load.c.backlog, 0))
        .outerjoin(load, load.c.agent_id == Agent.id)
        .where(Agent.user_id == user_id, Agent.type == agent_type, Agent.deleted_at.is_(None))
    ).all()
    return [Candidate(agent_id=r[0], status=r[1], max_concurrency=r[2], quality_alpha=r[3], quality_beta=r[4],
                      created_at=r[5], in_flight=int(r[6]), backlog=int(r[7])) for r in rows]


def route(session: Session, user_id: uuid.UUID, agent_type: str) -> Agent:
    """The agent that gets a task sent to `agent_type`, or 409 NO_AGENT_AVAILABLE explaining why."""
    decision: Decision = choose(candidates(session, user_id, agent_type))
    if decision.chosen is None:
        raise NoAgentAvailableError(
            f"no active {agent_type!r} agent has capacity for this task",
            {"agent_type": agent_type, "agents": decision.total, "active": decision.active,
             "at_capacity": decision.at_capacity},
        )
    agent = session.get(Agent, decision.chosen.agent_id)
    assert agent is not None  # read in this transaction a moment ago
    return agent
