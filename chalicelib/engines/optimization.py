"""The optimization engine: resource allocation (which agent gets a task) and load balancing (how many
consumer instances each queue should run).

**The routing rule** (used by `POST /tasks` with only `agent_type`, orchestrator plan steps and workflow
steps; it lives here and nowhere else), in order:
1. only the caller's own, non-deleted agents of that type whose status is `active`;
2. only agents with capacity: tasks in `processing` < `max_concurrency`;
3. highest quality estimate first: the posterior mean alpha / (alpha + beta) of the agent's
   Beta(quality_alpha, quality_beta), which the learning engine maintains;
4. then fewest tasks in flight (`processing`);
5. then smallest backlog (`pending` + `queued`): a burst sent to equally good idle agents is spread across
   them instead of piling onto one;
6. then the oldest agent (created_at), then the id, so the choice is deterministic.
No eligible agent is a decision too: it says how many agents of the type exist, how many are active and how
many of those are at capacity.

**Concurrency** (chalicelib.engines.concurrency): per agent type, Little's law over the caller's tasks.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from chalicelib.db.models import Agent, Task
from chalicelib.domain.agents import AGENT_TYPES
from chalicelib.domain.tasks import TaskStatus
from chalicelib.engines import Engine, EngineContext
from chalicelib.errors import NoAgentAvailableError

ACTIVE = "active"
RANK_KEYS = ("quality", "in_flight", "backlog", "created_at", "agent_id")


def quality_estimate(alpha: float, beta: float) -> float:
    """Posterior mean of Beta(alpha, beta); an unusable prior (non-positive) counts as no information (0.5)."""
    if alpha <= 0 or beta <= 0:
        return 0.5
    return alpha / (alpha + beta)


@dataclass(frozen=True)
class Candidate:
    agent_id: uuid.UUID
    status: str
    max_concurrency: int
    in_flight: int
    backlog: int
    quality_alpha: float
    quality_beta: float
    created_at: datetime
    name: str = ""

    @property
    def quality(self) -> float:
        return quality_estimate(self.quality_alpha, self.quality_beta)

    @property
    def has_capacity(self) -> bool:
        return self.in_flight < self.max_concurrency


@dataclass(frozen=True)
class Decision:
    chosen: Candidate | None
    total: int  # agents of the type (not deleted), whatever their status
    active: int
    at_capacity: int  # active agents with no free slot


def _rank(c: Candidate) -> tuple[float, int, int, datetime, str]:
    return (-c.quality, c.in_flight, c.backlog, c.created_at, str(c.agent_id))


def choose(candidates: Iterable[Candidate]) -> Decision:
    pool = list(candidates)
    active = [c for c in pool if c.status == ACTIVE]
    eligible = [c for c in active if c.has_capacity]
    chosen = min(eligible, key=_rank) if eligible else None
    return Decision(chosen=chosen, total=len(pool), active=len(active), at_capacity=len(active) - len(eligible))


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
               Agent.created_at, func.coalesce(load.c.in_flight, 0), func.coalesce(load.c.backlog, 0), Agent.name)
        .outerjoin(load, load.c.agent_id == Agent.id)
        .where(Agent.user_id == user_id, Agent.type == agent_type, Agent.deleted_at.is_(None))
    ).all()
    return [Candidate(agent_id=r[0], status=r[1], max_concurrency=r[2], quality_alpha=r[3], quality_beta=r[4],
                      created_at=r[5], in_flight=int(r[6]), backlog=int(r[7]), name=r[8]) for r in rows]


def route(session: Session, user_id: uuid.UUID, agent_type: str) -> Agent:
    """The agent that gets a task sent to `agent_type`, or 409 NO_AGENT_AVAILABLE explaining why."""
    decision = choose(candidates(session, user_id, agent_type))
    if decision.chosen is None:
        raise NoAgentAvailableError(
            f"no active {agent_type!r} agent has capacity for this task",
            {"agent_type": agent_type, "agents": decision.total, "active": decision.active,
             "at_capacity": decision.at_capacity},
        )
    agent = session.get(Agent, decision.chosen.agent_id)
    assert agent is not None  # read in this transaction a moment ago
    return agent


# --- the decision breakdown -------------------------------------------------------------------------------------

def _key_values(c: Candidate) -> dict[str, Any]:
    return {"quality": round(c.quality, 6), "in_flight": c.in_flight, "backlog": c.backlog,
            "created_at": c.created_at.isoformat(), "agent_id": str(c.agent_id)}


def explain(pool: list[Candidate]) -> dict[str, Any]:
    """Every candidate with why it was excluded or where it ranked, and what decided the winner."""
    decision = choose(pool)
    ranked = sorted((c for c in pool if c.status == ACTIVE and c.has_capacity), key=_rank)
    rows: list[dict[str, Any]] = []
    for c in sorted(pool, key=_rank):
        row: dict[str, Any] = {"agent_id": str(c.agent_id), "name": c.name, "status": c.status,
                               "max_concurrency": c.max_concurrency, **_key_values(c)}
        if c.status != ACTIVE:
            row.update(eligible=False, excluded="not active (rule 1)")
        elif not c.has_capacity:
            row.update(eligible=False,
                       excluded=f"at capacity: {c.in_flight} of {c.max_concurrency} slots busy (rule 2)")
        else:
            row.update(eligible=True, rank=ranked.index(c) + 1)
        rows.append(row)
    why = None
    if decision.chosen is not None:
        if len(ranked) == 1:
            why = "the only active agent of the type with a free slot"
        else:
            first, second = _rank(ranked[0]), _rank(ranked[1])
            key = next(RANK_KEYS[i] for i in range(len(first)) if first[i] != second[i])
            why = (f"ranked first of {len(ranked)} eligible agents; it beats the runner-up "
                   f"({ranked[1].name or ranked[1].agent_id}) on {key} (rule {3 + RANK_KEYS.index(key)} "
                   f"of the routing rule)")
    return {"chosen": str(decision.chosen.agent_id) if decision.chosen else None,
            "chosen_name": decision.chosen.name if decision.chosen else None, "why": why,
            "agents": decision.total, "active": decision.active, "at_capacity": decision.at_capacity,
            "candidates": rows}


class OptimizationEngine(Engine):
    name = "optimization"
    description = ("Resource allocation and load balancing: which of your agents the routing rule picks for a "
                   "task sent to an agent type (every candidate, with why), and the recommended maximum "
                   "concurrency per queue from your backlog and observed durations (Little's law, bounded by the "
                   "consumers' Postgres connection budget).")
    input_schema = {
        "type": "object", "additionalProperties": False,
        "properties": {
            "agent_type": {"enum": list(AGENT_TYPES),
                           "description": "one agent type; omitted: every type you have agents or tasks of"},
            "window_hours": {"type": "integer", "minimum": 1, "maximum": 24 * 30, "default": 24,
                             "description": "how far back arrivals and durations are observed"},
            "drain_seconds": {"type": "integer", "minimum": 10, "maximum": 86_400, "default": 300,
                              "description": "how soon the current backlog should be worked off"},
        },
    }
    output_schema = {
        "type": "object", "required": ["routing", "concurrency", "connection_budget"],
        "properties": {"routing": {"type": "array"}, "concurrency": {"type": "array"},
                       "connection_budget": {"type": "object"}},
    }
    example = {"agent_type": "validation", "window_hours": 24, "drain_seconds": 300}

    def run(self, ctx: EngineContext, input: dict[str, Any]) -> dict[str, Any]:  # noqa: A002 - the contract's name
        from chalicelib.db.types import utcnow
        from chalicelib.engines import concurrency

        agent_type = input.get("agent_type")
        window_hours = int(input.get("window_hours", 24))
        drain_seconds = int(input.get("drain_seconds", 300))
        now = utcnow()
        with ctx.transaction() as session:
            types = [agent_type] if agent_type else concurrency.types_in_use(session, ctx.user_id)
            routing = [{"agent_type": t, **explain(candidates(session, ctx.user_id, t))} for t in types]
            observed = concurrency.observe(session, ctx.user_id, types, now=now, window_hours=window_hours)
        recommendations, budget = concurrency.recommend(observed, window_hours=window_hours,
                                                        drain_seconds=drain_seconds)
        return {"scope": "yours", "routing": routing, "concurrency": recommendations, "connection_budget": budget}
