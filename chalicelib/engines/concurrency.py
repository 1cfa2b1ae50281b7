"""The optimization engine's load balancing: a recommended maximum concurrency per agent queue.

Little's law: the instances busy on average = arrival rate x mean duration (L = lambda W). On top, the backlog
waiting now should be worked off within `drain_seconds`: backlog x mean duration / drain_seconds more. The sum,
rounded up, is what the queue needs; it is bounded below by Lambda's event-source floor and above by the
consumers' Postgres connection budget (chalicelib.capacity): a queue may only grow by the instances the budget
has left after every consumer at its configured maximum, and several queues growing share that headroom.
Figures are over the caller's tasks (owner-scoped, like every engine).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, extract, func, or_, select
from sqlalchemy.orm import Session

from chalicelib import capacity
from chalicelib.db.models import Agent, Task
from chalicelib.domain.agents import AGENT_TYPES
from chalicelib.domain.tasks import TERMINAL, TaskStatus

WAITING = (TaskStatus.PENDING, TaskStatus.QUEUED)


def types_in_use(session: Session, user_id: uuid.UUID) -> list[str]:
    """Agent types the caller has live agents of."""
    return list(session.scalars(select(Agent.type).where(Agent.user_id == user_id, Agent.deleted_at.is_(None))
                                .distinct().order_by(Agent.type)))


def observe(session: Session, user_id: uuid.UUID, types: Sequence[str], *, now: datetime,
            window_hours: int) -> dict[str, dict[str, Any]]:
    """Backlog now, arrivals and finished-task durations in the window, per type: one grouped statement."""
    since = now - timedelta(hours=window_hours)
    finished = (Task.status.in_(list(TERMINAL)) & (Task.completed_at >= since) & Task.started_at.is_not(None))
    if session.get_bind().dialect.name == "postgresql":
        duration: ColumnElement[Any] = extract("epoch", Task.completed_at - Task.started_at)
    else:  # SQLite (the local runtime) stores text timestamps: julianday differences are days
        duration = (func.julianday(Task.completed_at) - func.julianday(Task.started_at)) * 86400
    rows = session.execute(
        select(Task.agent_type,
               func.count().filter(Task.status.in_(WAITING)),
               func.count().filter(Task.created_at >= since),
               func.count().filter(finished),
               func.avg(duration).filter(finished))
        .where(Task.user_id == user_id, Task.agent_type.in_(list(types)),
               or_(Task.status.in_(WAITING), Task.created_at >= since, Task.completed_at >= since))
        .group_by(Task.agent_type)
    ).all()
    seen = {r[0]: {"backlog": int(r[1]), "arrivals": int(r[2]), "finished": int(r[3]),
                   "mean_duration_seconds": float(r[4]) if r[4] is not None else None} for r in rows}
    empty = {"backlog": 0, "arrivals": 0, "finished": 0, "mean_duration_seconds": None}
    return {t: seen.get(t, dict(empty)) for t in types}


def headroom_instances() -> int:
    """Consumer instances the connection budget has left with every consumer at its configured maximum."""
    used = capacity.consumer_connections(AGENT_TYPES)
    return max(0, (capacity.DB_CONNECTION_BUDGET - used) // capacity.DB_CONNECTIONS_PER_INSTANCE)


def recommend(observed: dict[str, dict[str, Any]], *, window_hours: int,
              drain_seconds: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    window_seconds = window_hours * 3600
    headroom = headroom_instances()
    out: list[dict[str, Any]] = []
    for agent_type, o in observed.items():
        configured = capacity.agent_max_concurrency(agent_type)
        ceiling = configured + headroom
        mean = o["mean_duration_seconds"]
        rate = o["arrivals"] / window_seconds
        row: dict[str, Any] = {"agent_type": agent_type, **o, "window_seconds": window_seconds,
                               "arrival_rate_per_second": round(rate, 9), "configured": configured,
                               "ceiling": ceiling, "drain_seconds": drain_seconds}
        if mean is None:
            row.update(steady_state=None, drain=None, needed=None, recommended=configured, bound="no data",
                       reason="no task of this type finished in the window: keep the configured maximum")
            out.append(row)
            continue
        steady = rate * mean
        drain = o["backlog"] * mean / drain_seconds
        needed = math.ceil(steady + drain - 1e-9)
        recommended = min(max(needed, capacity.MIN_EVENT_SOURCE_CONCURRENCY), ceiling)
        if needed > ceiling:
            bound = "connection budget"
        elif needed < capacity.MIN_EVENT_SOURCE_CONCURRENCY:
            bound = "event source minimum"
        else:
            bound = "little's law"
        row.update(mean_duration_seconds=round(mean, 3), steady_state=round(steady, 4), drain=round(drain, 4),
                   needed=needed, recommended=recommended, bound=bound,
                   reason=(f"{o['arrivals']} arrivals in {window_seconds}s x {mean:.3f}s mean = {steady:.3f} busy on "
                           f"average; + {o['backlog']} waiting x {mean:.3f}s / {drain_seconds}s = {drain:.3f} to "
                           f"drain; needs {needed}, bounded to [{capacity.MIN_EVENT_SOURCE_CONCURRENCY}, {ceiling}]"))
        out.append(row)
    _share_headroom(out, headroom)
    configured_total = capacity.consumer_connections(AGENT_TYPES)
    extra = sum(max(0, r["recommended"] - r["configured"]) for r in out)
    saved = sum(max(0, r["configured"] - r["recommended"]) for r in out)
    budget = {"budget": capacity.DB_CONNECTION_BUDGET, "per_instance": capacity.DB_CONNECTIONS_PER_INSTANCE,
              "configured_connections": configured_total, "headroom_instances": headroom,
              "recommended_connections": configured_total
              + (extra - saved) * capacity.DB_CONNECTIONS_PER_INSTANCE}
    return out, budget


def _share_headroom(rows: list[dict[str, Any]], headroom: int) -> None:
    """Queues that all want to grow share the headroom in proportion to what they asked for (rounded down)."""
    wanted = {r["agent_type"]: r["recommended"] - r["configured"] for r in rows if r["recommended"] > r["configured"]}
    total = sum(wanted.values())
    if total <= headroom:
        return
    for r in rows:
        grow = wanted.get(r["agent_type"])
        if grow:
            granted = grow * headroom // total
            r["recommended"] = max(r["configured"] + granted, capacity.MIN_EVENT_SOURCE_CONCURRENCY)
            r["bound"] = "connection budget (shared)"
