"""The lane of a managed agent's new task (the rule: chalicelib/domain/lanes.py; docs/scheduling.md).

One statement reads both counts of the owner's active tasks of the type, each bounded by its allowance
(LIMIT), over the partial index `ix_tasks_active_user_id_agent_type_priority` (migration 0014): an owner with
5,000 active tasks costs at most `share + urgent` index entries, not 5,000
(tests/integration/test_lanes.py pins the plan).
"""

from __future__ import annotations

import functools
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BindParameter, ColumnElement, ScalarSelect, Select, Uuid, bindparam, func, literal, select
from sqlalchemy.orm import Session

from chalicelib.db.models import Task
from chalicelib.domain import lanes
from chalicelib.domain.lanes import Allowances, OwnerLoad
from chalicelib.domain.tasks import TaskPriority


def load_statement(user_id: uuid.UUID | BindParameter[Any], agent_type: str | BindParameter[Any], *,
                   excluding: uuid.UUID | BindParameter[Any], allowances: Allowances) -> Select[int, int]:
    """SELECT (active tasks, up to `share`), (active critical/high ones, up to `urgent`): one round trip.

    Each count reads its rows in index order (ORDER BY priority, the index's third column after the two
    equalities), and the urgent one as a range (priority <= 'high': lanes.URGENT_AT_MOST). Without the order a
    planner that thinks the owner's rows are dense prefers a sequential scan that "stops after 10 rows" and,
    the owner's active rows being the newest, reads most of the table first (it did on 30,000 rows)."""
    def capped(limit: int, *extra: ColumnElement[bool]) -> ScalarSelect[int]:
        rows = (select(literal(1)).select_from(Task)
                .where(Task.user_id == user_id, Task.agent_type == agent_type, Task.status.in_(lanes.ACTIVE),
                       Task.id != excluding, *extra)
                .order_by(Task.priority).limit(limit).subquery())
        return select(func.count()).select_from(rows).scalar_subquery()

    return select(capped(lanes.active_cap(allowances)),
                  capped(allowances.urgent, Task.priority <= lanes.URGENT_AT_MOST))


@functools.lru_cache(maxsize=16)
def prepared_load_statement(allowances: Allowances) -> Select[int, int]:
    """`load_statement` with its values as bound parameters, built once per allowances: building it took
    ~0.5 ms of CPU per POST /tasks (a third of the statement's cost), and SQLAlchemy then recomputed its
    cache key too (issue #14)."""
    return load_statement(bindparam("user_id", type_=Uuid()), bindparam("agent_type"),
                          excluding=bindparam("excluding", type_=Uuid()), allowances=allowances)


def owner_load(session: Session, user_id: uuid.UUID, agent_type: str, *, excluding: uuid.UUID,
               allowances: Allowances) -> OwnerLoad:
    """The owner's active tasks of `agent_type` but `excluding` (the new one), counted up to each allowance."""
    active, urgent = session.connection().execute(
        prepared_load_statement(allowances),
        {"user_id": user_id, "agent_type": agent_type, "excluding": excluding}).one()
    return OwnerLoad(active=int(active), urgent=int(urgent))


def recounted_for_low_work(session: Session, task: Task, allowances: Allowances, destination: str) -> str:
    """A `low` task's lane, exact: when the first count says fast, the owner's creates of low work of this type
    take turns (a transaction-scoped advisory lock, held to the COMMIT) and count again, so each sees the ones
    before it. Without it a burst of 12 parallel creates each counted the committed tasks only, and 15 of 5,000
    low tasks took the fast lane, where the owner's and everybody's critical tasks then waited behind them
    (bench/priority_backlog.py). A count that already says bulk needs no turn (a concurrent create only adds
    to it), so in a burst only the first few creates take one: the lock's cost (serialized COMMITs) stays with
    the creates that might use the fast lane. Normal and urgent work is not recounted (the share stays soft
    under concurrency, docs/scheduling.md)."""
    if not needs_low_work_turn(task, destination):
        return destination
    session.execute(low_work_turn_statement(), {"turn_key": turn_key(task)})
    return _counted_destination(session, task, allowances)


def needs_low_work_turn(task: Task, destination: str) -> bool:
    """Whether `recounted_for_low_work` must take the owner's turn and count again for this destination."""
    return task.priority == TaskPriority.LOW and lanes.lane_of(destination) is not lanes.Lane.BULK


@functools.lru_cache(maxsize=1)
def low_work_turn_statement() -> Select[Any]:
    """The transaction-scoped advisory lock a `low` task's recount takes (`recounted_for_low_work`); it binds
    `turn_key` (`turn_key(task)`)."""
    return select(func.pg_advisory_xact_lock(func.hashtext(bindparam("turn_key"))))


def turn_key(task: Task) -> str:
    return f"lanes:{task.user_id}:{task.agent_type}"


def _counted_destination(session: Session, task: Task, allowances: Allowances) -> str:
    load = owner_load(session, task.user_id, task.agent_type, excluding=task.id, allowances=allowances)
    return lanes.destination(task.agent_type, lanes.choose(task.priority, load, allowances))


def destination_for(session: Session, task: Task, allowances: Allowances) -> str:
    """The outbox destination of a new managed task: its agent type, or that + "-bulk" (a low task's exact:
    `recounted_for_low_work`)."""
    return recounted_for_low_work(session, task, allowances, _counted_destination(session, task, allowances))


def destination_and_tasks_since(session: Session, task: Task, allowances: Allowances, since: datetime
                                ) -> tuple[str, int]:
    """`destination_for` and the owner's tasks created since `since` (the daily quota's count,
    chalicelib.services.quotas.tasks_since) in ONE statement: a POST /tasks round trip fewer (issue #14)."""
    active, urgent, created = session.connection().execute(
        prepared_load_and_count_statement(allowances), {**load_parameters(task), "since": since}).one()
    destination = destination_of(task, active, urgent, allowances)
    return recounted_for_low_work(session, task, allowances, destination), int(created or 0)


def destination_of(task: Task, active: Any, urgent: Any, allowances: Allowances) -> str:
    """The lane's destination for the two counts `load_statement` read."""
    load = OwnerLoad(active=int(active), urgent=int(urgent))
    return lanes.destination(task.agent_type, lanes.choose(task.priority, load, allowances))


@functools.lru_cache(maxsize=16)
def prepared_load_and_count_statement(allowances: Allowances) -> Select[int, int, int]:
    """`prepared_load_statement` plus the quota's count as a third column (built once per allowances)."""
    from chalicelib.services.quotas import tasks_since

    count = tasks_since(bindparam("user_id", type_=Uuid()),
                        bindparam("since", type_=Task.__table__.c.created_at.type)).scalar_subquery()
    return prepared_load_statement(allowances).add_columns(count)


def load_parameters(task: Task) -> dict[str, Any]:
    """The values `prepared_load_statement` and `prepared_load_and_count_statement` bind (plus `since` for the
    second)."""
    return {"user_id": task.user_id, "agent_type": task.agent_type, "excluding": task.id}
