"""Subtasks of an orchestrator task: creating them, and finishing the parent when they finish.

A subtask's id is uuid5(parent id, step id): creating a step twice (two
siblings finishing at once, a redelivery) hits the primary key instead of
running the step twice, and the step of a subtask is found without a column.

`on_task_finished` must be called, in the same transaction, whenever a task
with a parent reaches a terminal state (the consumer, cancellation, agent
deletion, external completion, a reaper). It locks the parent row first, so
siblings finishing concurrently are handled one after the other: the second
sees the first's committed state, and the parent is completed or failed
exactly once (also guarded by a conditional update on its status).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, select, update
from sqlalchemy.orm import Session

from chalicelib.agents import registry
from chalicelib.db.models import Agent, OutboxMessage, Task, TaskResult
from chalicelib.db.session import rowcount
from chalicelib.db.types import utcnow
from chalicelib.domain.tasks import CANCELLABLE, TaskStatus
from chalicelib.engines.optimization import candidates, choose
from chalicelib.errors import AgentError, ValidationError
from chalicelib.observability import logger
from chalicelib.schemas.plans import PlanStep
from chalicelib.services import audit

ORCHESTRATOR = "orchestrator"
UNSUCCESSFUL = (TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.TIMED_OUT)


class StepAgentUnavailableError(AgentError):
    code = "STEP_AGENT_UNAVAILABLE"


class StepInputInvalidError(AgentError):
    code = "STEP_INPUT_INVALID"


class OrchestratorStepForbiddenError(AgentError):
    code = "ORCHESTRATOR_STEP_FORBIDDEN"


class OrchestrationTooDeepError(AgentError):
    code = "ORCHESTRATION_TOO_DEEP"


class OrchestrationTooLargeError(AgentError):
    code = "ORCHESTRATION_TOO_LARGE"


@dataclass(frozen=True)
class Bounds:
    """How far one root task may fan out (settings orchestrator_max_depth / orchestrator_max_descendants)."""

    max_depth: int = 3
    max_descendants: int = 100


@dataclass(frozen=True)
class ResolvedStep:
    step: PlanStep
    agent: Agent
    input_data: dict[str, Any]


def subtask_id(parent_id: uuid.UUID, step_id: str) -> uuid.UUID:
    return uuid.uuid5(parent_id, step_id)


def resolve_step(session: Session, user_id: uuid.UUID, step: PlanStep) -> ResolvedStep:
    """The agent that runs the step and its validated input; AgentError naming the step otherwise."""
    where = {"step_id": step.step_id}
    if step.agent_id is not None:
        agent = session.get(Agent, step.agent_id)
        if agent is None or agent.user_id != user_id or agent.deleted_at is not None:
            raise StepAgentUnavailableError(f"step {step.step_id!r}: agent not found",
                                            {**where, "agent_id": str(step.agent_id)})
        if agent.status != "active":
            raise StepAgentUnavailableError(f"step {step.step_id!r}: agent is {agent.status}",
                                            {**where, "agent_id": str(agent.id), "status": agent.status})
    else:
        assert step.agent_type is not None
        # The same rule as POST /tasks with only a type (chalicelib.engines.optimization).
        decision = choose(candidates(session, user_id, step.agent_type))
        if decision.chosen is None:
            raise StepAgentUnavailableError(
                f"step {step.step_id!r}: you have no active {step.agent_type!r} agent with capacity",
                {**where, "agent_type": step.agent_type, "agents": decision.total, "active": decision.active,
                 "at_capacity": decision.at_capacity})
        chosen = session.get(Agent, decision.chosen.agent_id)
        assert chosen is not None  # read in this transaction a moment ago
        agent = chosen
    if agent.type == ORCHESTRATOR:  # a step by agent_id may name one: plans do not nest
        raise OrchestratorStepForbiddenError(f"step {step.step_id!r}: a plan step may not run an orchestrator",
                                             {**where, "agent_id": str(agent.id)})
    try:
        data = registry.validate_input(agent.type, step.input_data)
    except ValidationError as exc:
        raise StepInputInvalidError(f"step {step.step_id!r}: {exc.message}", {**where, **exc.details}) from exc
    return ResolvedStep(step, agent, data)


def create_subtask(session: Session, parent_id: uuid.UUID, user_id: uuid.UUID, priority: str, goal: str,
                   resolved: ResolvedStep) -> Task:
    step, agent = resolved.step, resolved.agent
    task = Task(id=subtask_id(parent_id, step.step_id), user_id=user_id, agent_id=agent.id,
                agent_type=agent.type, title=(step.title or f"{step.step_id}: {goal}")[:200],
                description=f"step {step.step_id} of orchestrator task {parent_id}", priority=priority,
                input_data=resolved.input_data, status=TaskStatus.PENDING, parent_task_id=parent_id)
    session.add(task)
    session.flush()
    session.add(OutboxMessage(aggregate_id=task.id, destination=agent.type,
                              payload={"task_id": str(task.id), "agent_type": agent.type}))
    audit.record(session, user_id=user_id, event_type="task.created", action="create", resource_type="task",
                 resource_id=task.id, details={"agent_id": str(agent.id), "agent_type": agent.type,
                                               "parent_task_id": str(parent_id), "step_id": step.step_id})
    return task


def ancestors(session: Session, task_id: uuid.UUID, limit: int) -> list[uuid.UUID]:
    """The parent_task_id chain above the task, nearest first, at most `limit` + 1 long."""
    chain: list[uuid.UUID] = []
    current: uuid.UUID | None = task_id
    while len(chain) <= limit:
        current = session.scalar(select(Task.parent_task_id).where(Task.id == current))
        if current is None:
            break
        chain.append(current)
    return chain


def descendant_count(session: Session, root_id: uuid.UUID) -> int:
    """Every task below the root, at any depth (one recursive query)."""
    tree = select(Task.id).where(Task.parent_task_id == root_id).cte("tree", recursive=True)
    tree = tree.union_all(select(Task.id).where(Task.parent_task_id == tree.c.id))
    return int(session.scalar(select(func.count()).select_from(tree)) or 0)


def start_plan(session: Session, task_id: uuid.UUID, goal: str, plan: Sequence[PlanStep], *, drafted: bool,
               bounds: Bounds) -> list[tuple[str, uuid.UUID]]:
    """Create the subtasks of the plan's first steps; return (step_id, task_id) of each.

    Idempotent for a rerun of the orchestrator task (its consumer died after this committed): the
    subtasks already exist, so none is created again and the parent is brought up to date instead.
    """
    parent = session.execute(select(Task.id, Task.user_id, Task.priority, Task.input_data, Task.status)
                             .where(Task.id == task_id).with_for_update(key_share=True)).first()
    assert parent is not None  # the consumer claimed it a moment ago
    if parent.status in (TaskStatus.CANCELLED, TaskStatus.TIMED_OUT):
        # Cancelled while the plan was drafted: the row lock orders this against the cancel, which cancels
        # the subtasks it finds; none may be created after it.
        from chalicelib.errors import TaskCancelledError

        raise TaskCancelledError("the task was cancelled before its plan started", {"task_id": str(task_id)})
    existing = dict(session.execute(select(Task.id, Task.parent_task_id).where(Task.parent_task_id == task_id))
                    .tuples().all())
    if existing:
        advance(session, task_id)
        return [(s.step_id, subtask_id(task_id, s.step_id)) for s in plan
                if not s.depends_on and subtask_id(task_id, s.step_id) in existing]
    chain = ancestors(session, task_id, bounds.max_depth)
    if len(chain) + 1 > bounds.max_depth:
        raise OrchestrationTooDeepError(
            f"subtasks here would be {len(chain) + 1} levels below their root task; the limit is {bounds.max_depth}",
            {"depth": len(chain) + 1, "max_depth": bounds.max_depth})
    root = chain[-1] if chain else task_id
    below = descendant_count(session, root)
    if below + len(plan) > bounds.max_descendants:
        raise OrchestrationTooLargeError(
            f"the root task would have {below + len(plan)} tasks below it; the limit is {bounds.max_descendants}",
            {"root_task_id": str(root), "descendants": below, "planned": len(plan),
             "max_descendants": bounds.max_descendants})
    if drafted:  # the subtasks' bookkeeping reads the plan from the task's input (plan_of)
        session.execute(update(Task).where(Task.id == task_id)
                        .values(input_data={**parent.input_data, "plan": [s.model_dump(mode="json") for s in plan]})
                        .execution_options(synchronize_session=False))
    # Every step is checked before anything is created: a bad plan fails whole, with no orphan subtasks.
    resolved = {step.step_id: resolve_step(session, parent.user_id, step) for step in plan}
    roots = [s for s in plan if not s.depends_on]
    return [(s.step_id, create_subtask(session, task_id, parent.user_id, parent.priority, goal,
                                       resolved[s.step_id]).id) for s in roots]


def cancel_tree(session: Session, task_ids: Iterable[uuid.UUID], now: datetime,
                error: dict[str, Any]) -> list[uuid.UUID]:
    """Cancel these tasks if still cancellable, and every live descendant of them; return what moved.

    Rows another transaction holds (a consumer running that step right now) are skipped, not waited
    for: that consumer will want the parent row this caller holds, and waiting would deadlock. Such a
    step finishes normally and its hook finds the parent already final.
    """
    cancelled: list[uuid.UUID] = []
    frontier = list(task_ids)
    while frontier:
        free = list(session.scalars(select(Task.id).where(Task.id.in_(frontier), Task.status.in_(CANCELLABLE))
                                    .with_for_update(key_share=True, skip_locked=True)))
        moved = list(session.scalars(
            update(Task).where(Task.id.in_(free), Task.status.in_(CANCELLABLE))
            .values(status=TaskStatus.CANCELLED, completed_at=now, updated_at=now, error=error)
            .returning(Task.id).execution_options(synchronize_session=False)
        )) if free else []
        cancelled += moved
        frontier = list(session.scalars(select(Task.id).where(Task.parent_task_id.in_(moved),
                                                              Task.status.in_(CANCELLABLE)))) if moved else []
    return cancelled


def plan_of(input_data: dict[str, Any] | None) -> tuple[str, list[PlanStep]]:
    data = input_data or {}
    return str(data.get("goal", "")), [PlanStep.model_validate(s) for s in data.get("plan") or []]


# The bookkeeping reads plain rows, never ORM entities: reloading a Task entity here would reset
# what the caller's session holds (e.g. a cancelled task with its result loaded, about to be returned).
_PARENT = (Task.id, Task.user_id, Task.priority, Task.status, Task.agent_type, Task.input_data, Task.started_at)
_STEP = (Task.id, Task.status, Task.error, Task.agent_id, Task.agent_type)
Steps = dict[str, Row[Any] | None]


def _steps(session: Session, parent_id: uuid.UUID, plan: Sequence[PlanStep]) -> Steps:
    rows = {r.id: r for r in session.execute(select(*_STEP).where(Task.parent_task_id == parent_id))}
    return {s.step_id: rows.get(subtask_id(parent_id, s.step_id)) for s in plan}


def on_task_finished(session: Session, task_id: uuid.UUID) -> None:
    """A task reached a terminal state: move its orchestrator parent on (see the module docstring)."""
    parent_id = session.scalar(select(Task.parent_task_id).where(Task.id == task_id))
    if parent_id is not None:
        advance(session, parent_id)


def advance(session: Session, parent_id: uuid.UUID) -> None:
    """Start the parent's steps whose dependencies completed, or finish it (failed fast, or all done)."""
    # FOR NO KEY UPDATE: serialises the siblings' hooks on the parent row without conflicting with the
    # KEY SHARE lock each sibling's own UPDATE takes on it (the tasks.parent_task_id foreign key check):
    # a plain FOR UPDATE deadlocks two siblings that finish at the same moment.
    parent = session.execute(select(*_PARENT).where(Task.id == parent_id).with_for_update(key_share=True)).first()
    if parent is None or parent.status != TaskStatus.PROCESSING or parent.agent_type != ORCHESTRATOR:
        return
    goal, plan = plan_of(parent.input_data)
    by_step = _steps(session, parent.id, plan)
    failed = next(((s, t) for s, t in ((s, by_step[s.step_id]) for s in plan) if t and t.status in UNSUCCESSFUL),
                  None)
    if failed is not None:
        step, child = failed
        error = {"code": "SUBTASK_FAILED", "message": f"step {step.step_id!r} {child.status}",
                 "details": {"step_id": step.step_id, "task_id": str(child.id), "status": child.status,
                             "error": child.error}}
        _finish(session, parent, goal, plan, by_step, TaskStatus.FAILED, error)
        return
    if all(t is not None and t.status == TaskStatus.COMPLETED for t in by_step.values()):
        _finish(session, parent, goal, plan, by_step, TaskStatus.COMPLETED, None)
        return
    done = {sid for sid, t in by_step.items() if t is not None and t.status == TaskStatus.COMPLETED}
    ready = [s for s in plan if by_step[s.step_id] is None and set(s.depends_on) <= done]
    try:
        resolved = [resolve_step(session, parent.user_id, s) for s in ready]
    except AgentError as exc:
        error = {"code": exc.code, "message": exc.message, "details": exc.details}
        _finish(session, parent, goal, plan, by_step, TaskStatus.FAILED, error)
        return
    for r in resolved:
        create_subtask(session, parent.id, parent.user_id, parent.priority, goal, r)
    if resolved:
        logger.info("orchestrator started dependent steps",
                    extra={"task_id": str(parent.id), "steps": [r.step.step_id for r in resolved]})


def aggregate(goal: str, plan: Sequence[PlanStep], by_step: Steps,
              results: dict[uuid.UUID, dict[str, Any]]) -> dict[str, Any]:
    steps = []
    for s in plan:
        t = by_step[s.step_id]
        steps.append({"step_id": s.step_id, "task_id": str(t.id) if t else None,
                      "agent_id": str(t.agent_id) if t else None, "agent_type": t.agent_type if t else s.agent_type,
                      "status": t.status if t else "not_started", "output": results.get(t.id) if t else None,
                      "error": t.error if t else None})
    return {"goal": goal, "steps": steps}


def _finish(session: Session, parent: Row[Any], goal: str, plan: Sequence[PlanStep], by_step: Steps,
            status: TaskStatus, error: dict[str, Any] | None) -> None:
    now = utcnow()
    if status == TaskStatus.FAILED:
        live = [t.id for t in by_step.values() if t is not None and t.status in CANCELLABLE]
        cancel_tree(session, live, now, {"code": "PARENT_FAILED", "message": "a sibling step failed",
                                         "details": {"parent_task_id": str(parent.id)}})
        by_step = _steps(session, parent.id, plan)
    moved = rowcount(session.execute(
        update(Task).where(Task.id == parent.id, Task.status == TaskStatus.PROCESSING)
        .values(status=status, error=error, completed_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    ))
    if not moved:  # someone else finished it (we hold the row lock, so only a non-locking writer could)
        return
    ids = [t.id for t in by_step.values() if t is not None]
    results: dict[uuid.UUID, dict[str, Any]] = dict(
        session.execute(select(TaskResult.task_id, TaskResult.output_data).where(TaskResult.task_id.in_(ids)))
        .tuples().all()) if ids else {}
    started = parent.started_at or now
    metrics = {"duration_ms": round((now - started).total_seconds() * 1000, 3), "subtasks": len(ids),
               "subtasks_completed": sum(1 for t in by_step.values() if t and t.status == TaskStatus.COMPLETED)}
    session.add(TaskResult(task_id=parent.id, status=status, output_data=aggregate(goal, plan, by_step, results),
                           metrics=metrics))
    session.flush()
    logger.info("orchestrator task finished", extra={"task_id": str(parent.id), "status": str(status)})
    on_task_finished(session, parent.id)  # an orchestrator may itself be a step of another


def after_cancel(session: Session, task_id: uuid.UUID) -> None:
    """A user cancelled this task: cancel its subtasks, and let its parent react."""
    now = utcnow()
    children = list(session.scalars(select(Task.id).where(Task.parent_task_id == task_id)))
    if children:
        cancel_tree(session, children, now, {"code": "PARENT_CANCELLED", "message": "the parent task was cancelled",
                                             "details": {"parent_task_id": str(task_id)}})
    on_task_finished(session, task_id)
