"""Workflow steps run by agents: a "workflow.step" token message becomes a task, and the task's end answers
the token.

`materialise` (agent consumer, before the batch claim) turns the message into a task row — the same table,
ownership and claim as any task — whose id is derived from the token, so a redelivered message maps to the
same task. `on_task_finished` runs in the transaction that moved a task with a `callback_token` to a terminal
status (every terminal path: the consumer, cancellation, agent deletion, reapers, external completion) and
writes the RunStep's outcome plus the token's answer to the outbox, in that one transaction.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from chalicelib.agents import registry
from chalicelib.db.models import Agent, Task
from chalicelib.db.types import utcnow
from chalicelib.domain.leases import AgentMode
from chalicelib.domain.tasks import TaskStatus
from chalicelib.engines.optimization import candidates, choose
from chalicelib.errors import MalformedMessageError, ValidationError
from chalicelib.observability import logger
from chalicelib.workflows import messages as m
from chalicelib.workflows import runstate as rs
from chalicelib.workflows.definition import WorkflowStep


def step_task_id(token: str, retry_count: int = 0) -> uuid.UUID:
    """One task per token and attempt: a redelivered message finds the task it created, an ASL retry (which
    may reuse the token) gets a new one."""
    digest = hashlib.sha256(token.encode()).hexdigest()
    return uuid.uuid5(uuid.NAMESPACE_URL, f"ymera-step:{digest}" + (f":{retry_count}" if retry_count else ""))


@dataclass(frozen=True)
class Materialised:
    """What became of a step message: a task to claim now, or nothing to run (answered, or external)."""

    task_id: uuid.UUID | None
    agent_type: str
    claim: bool


def parse(body: str) -> m.TokenMessage | None:
    """The step message in a record body, or None if the body is not one (a plain task message)."""
    if '"workflow.' not in body:
        return None
    try:
        msg = m.TokenMessage.model_validate_json(body)
    except Exception as exc:
        raise MalformedMessageError("message body is not a workflow step message", {"reason": str(exc)[:500]}) from exc
    if msg.kind != m.STEP:
        raise MalformedMessageError("an agent queue carries only workflow.step messages", {"kind": msg.kind})
    return msg


def materialise(session: Session, msg: m.TokenMessage, queue_type: str | None) -> Materialised:
    """The step's task (created once per token), or its token answered at once (short-circuits, failures)."""
    if queue_type is not None and msg.agent_type is not None and msg.agent_type != queue_type:
        raise MalformedMessageError("message agent_type does not match its queue",
                                    {"message_agent_type": msg.agent_type, "queue_agent_type": queue_type})
    task_id = step_task_id(msg.token, msg.retry_count)
    existing = session.execute(select(Task.id, Task.agent_type, Task.agent_id).where(Task.id == task_id)).first()
    if existing is not None:  # a redelivery: the task's own state decides (claimable, running or finished)
        return Materialised(task_id, existing.agent_type, claim=not _external(session, existing.agent_id))
    ctx = rs.load(session, msg.run_id, msg.step_id)
    if ctx is None:
        raise MalformedMessageError("the step message names no step of a run",
                                    {"run_id": str(msg.run_id), "step_id": msg.step_id})
    agent_type = msg.agent_type or queue_type or ""
    try:
        if rs.short_circuit(session, ctx, msg):
            return Materialised(None, agent_type, claim=False)
        data = rs.scope(session, ctx, msg.item_index)
        agent = _agent(session, ctx.run.user_id, ctx.step, ctx.version.step_agent_types)
        resolved = rs.resolve_input(ctx, data)
        try:
            input_data = registry.validate_input(agent.type, resolved)
        except ValidationError as exc:
            raise rs.StepFailure("STEP_INPUT_INVALID", f"step {msg.step_id!r}: {exc.message}",
                                 {"step_id": msg.step_id, **exc.details}) from exc
    except rs.StepFailure as failure:
        _fail_without_task(session, ctx, msg, failure)
        return Materialised(None, agent_type, claim=False)
    now = utcnow()
    label = ctx.step.title or ctx.step.step_id
    suffix = f" [{msg.item_index}]" if msg.item_index is not None else ""
    session.add(Task(id=task_id, user_id=ctx.run.user_id, agent_id=agent.id, agent_type=agent.type,
                     title=f"{label}{suffix}"[:200],
                     description=rs.task_description(msg.run_id, msg.step_id, msg.execution),
                     input_data=input_data, status=TaskStatus.QUEUED, run_id=msg.run_id, step_id=msg.step_id,
                     item_index=msg.item_index, callback_token=msg.token, created_at=now, updated_at=now,
                     # an orchestrator plan's step: a subtask of that task (its tree bounds count it)
                     parent_task_id=ctx.run.parent_task_id))
    if msg.item_index is None:
        rs.start(ctx.row, now)
        ctx.row.task_id = task_id
    elif ctx.row.status in ("pending", "failed", "cancelled"):
        ctx.row.status, ctx.row.started_at = "running", ctx.row.started_at or now
    rs.touch(session, msg.run_id)
    session.flush()
    return Materialised(task_id, agent.type, claim=agent.mode != AgentMode.EXTERNAL)


def _external(session: Session, agent_id: uuid.UUID) -> bool:
    return session.scalar(select(Agent.mode).where(Agent.id == agent_id)) == AgentMode.EXTERNAL


def _agent(session: Session, user_id: uuid.UUID, step: WorkflowStep, step_types: dict[str, Any]) -> Agent:
    """The agent that runs the step: the given one (owner-checked), or the best of the type (orchestrator rule).

    Unlike a plan step, a workflow step whose agents are all at capacity still gets the least-loaded active
    one: its task waits in the queue like any other, and a for_each may fan out past one agent's slots."""
    where = {"step_id": step.step_id}
    if step.agent_id is not None:
        agent = session.get(Agent, step.agent_id)
        if agent is None or agent.user_id != user_id or agent.deleted_at is not None:
            raise rs.StepFailure("STEP_AGENT_UNAVAILABLE", f"step {step.step_id!r}: agent not found",
                                 {**where, "agent_id": str(step.agent_id)})
        if agent.status != "active":
            raise rs.StepFailure("STEP_AGENT_UNAVAILABLE", f"step {step.step_id!r}: agent is {agent.status}",
                                 {**where, "agent_id": str(agent.id), "status": agent.status})
        return agent
    agent_type = step.agent_type or str(step_types.get(step.step_id) or "")
    pool = candidates(session, user_id, agent_type)
    decision = choose(pool)
    chosen = decision.chosen or min((c for c in pool if c.status == "active"),
                                    key=lambda c: (c.in_flight + c.backlog, str(c.agent_id)), default=None)
    if chosen is None:
        raise rs.StepFailure("STEP_AGENT_UNAVAILABLE",
                             f"step {step.step_id!r}: you have no active {agent_type!r} agent",
                             {**where, "agent_type": agent_type, "agents": decision.total})
    agent = session.get(Agent, chosen.agent_id)
    assert agent is not None
    return agent


def _fail_without_task(session: Session, ctx: rs.StepContext, msg: m.TokenMessage, failure: rs.StepFailure) -> None:
    """The step cannot run as asked: fail it (or its item, counted against the tolerance) with a clear code."""
    logger.info("workflow step failed before it ran", extra={"run_id": str(msg.run_id), "step_id": msg.step_id,
                                                             "code": failure.code})
    finish(session, ctx, msg.token, aggregate_id=msg.run_id, item_index=msg.item_index, succeeded=False,
           task_id=None, error=failure.as_error(), last=True)


def on_task_finished(session: Session, task_id: uuid.UUID) -> None:
    """A task reached a terminal status: if it is a workflow step's, record the step and answer its token."""
    task = session.execute(select(Task.id, Task.run_id, Task.step_id, Task.item_index, Task.callback_token,
                                  Task.status, Task.error, Task.description).where(Task.id == task_id)).first()
    if task is None or task.callback_token is None or task.run_id is None or task.step_id is None:
        return
    ctx = rs.load(session, task.run_id, task.step_id)
    if ctx is None:
        return
    if task.status == TaskStatus.COMPLETED and ctx.run.status != "cancelled":
        finish(session, ctx, task.callback_token, aggregate_id=task.id, item_index=task.item_index, succeeded=True,
               task_id=task.id, output=rs.task_output(session, task.id))
        return
    error = task.error or {"code": f"TASK_{str(task.status).upper()}", "message": f"the step's task {task.status}"}
    if task.status == TaskStatus.COMPLETED:  # finished after its run was cancelled: the run stays cancelled
        error = {"code": "RUN_CANCELLED", "message": "the run was cancelled while the step ran"}
    if ctx.run.status == "cancelled" or (task.status == TaskStatus.CANCELLED
                                         and ctx.run.status in rs.RUN_TERMINAL):
        _record_cancelled(ctx, task.id, task.item_index, error)
        rs.answer(session, task.callback_token, run_id=task.run_id, step_id=task.step_id, aggregate_id=task.id,
                  item_index=task.item_index, error=m.ERROR_RUN_CANCELLED, cause=rs.cause_of(error))
        return
    attempt = rs.item_attempts(session, ctx.run, task.step_id, task.item_index, task.description)
    finish(session, ctx, task.callback_token, aggregate_id=task.id, item_index=task.item_index, succeeded=False,
           task_id=task.id, error=error, last=attempt >= ctx.step.max_attempts)


def _record_cancelled(ctx: rs.StepContext, task_id: uuid.UUID, item_index: int | None,
                      error: dict[str, Any]) -> None:
    row, now = ctx.row, utcnow()
    if item_index is not None:
        results = dict((row.output or {}).get("results") or {})
        results[str(item_index)] = {"task_id": str(task_id), "status": "cancelled"}
        row.output = {**(row.output or {}), "results": results}
    else:
        row.task_id = task_id
    if row.status not in ("succeeded", "skipped"):
        row.status, row.error, row.finished_at = "cancelled", error, now


def finish(session: Session, ctx: rs.StepContext, token: str, *, aggregate_id: uuid.UUID, item_index: int | None,
           succeeded: bool, task_id: uuid.UUID | None, output: Any = None, error: dict[str, Any] | None = None,
           last: bool = True) -> None:
    """Record a run of the step (or one item) and answer its token; shared with engine steps (control)."""
    row, step, now = ctx.row, ctx.step, utcnow()
    where: dict[str, Any] = {"run_id": ctx.run.id, "step_id": step.step_id, "aggregate_id": aggregate_id,
                             "item_index": item_index}
    if item_index is None:
        row.task_id = task_id or row.task_id
        if succeeded:
            row.status, row.output, row.error, row.finished_at = "succeeded", output, None, now
            rs.answer(session, token, output=m.StepAnswer(step_id=step.step_id, status="succeeded",
                                                          task_id=task_id).model_dump(mode="json"), **where)
            return
        row.error = error
        if last:
            row.status, row.finished_at = "failed", now
        rs.answer(session, token, error=m.ERROR_STEP_FAILED, cause=rs.cause_of(error), **where)
        return
    results = dict((row.output or {}).get("results") or {})
    entry: dict[str, Any] = {"task_id": str(task_id) if task_id else None}
    if succeeded:
        entry["status"] = "succeeded"
        if task_id is None:  # an engine item: its output is kept here (there is no task result)
            entry["output"] = output
    else:
        entry.update(status="failed" if last else "retrying", error=error)
    results[str(item_index)] = entry
    row.output = {**(row.output or {}), "results": results}
    # Counted from the results, not incremented: a redelivered answer or a redrive cannot skew it.
    row.items_failed = sum(1 for r in results.values() if r.get("status") == "failed")
    total = row.items_total or 0
    if not succeeded and not last:
        rs.answer(session, token, error=m.ERROR_STEP_FAILED, cause=rs.cause_of(error), **where)
        return
    if not succeeded and total and row.items_failed * 100 / total > step.tolerated_failure_percentage:
        row.status, row.finished_at = "failed", now
        row.error = {"code": "TOLERANCE_EXCEEDED", "message": f"{row.items_failed} of {total} items failed "
                     f"(tolerated: {step.tolerated_failure_percentage}%)", "details": {"last_error": error}}
        rs.answer(session, token, error=m.ERROR_TOLERANCE_EXCEEDED, cause=rs.cause_of(row.error), **where)
        return
    done = sum(1 for r in results.values() if r.get("status") in ("succeeded", "failed"))
    if total and done >= total and row.status not in ("failed", "cancelled"):
        row.status, row.finished_at = "succeeded", now
        row.output = {**row.output, "items_total": total, "items_failed": row.items_failed}
    answered = m.StepAnswer(step_id=step.step_id, status="succeeded" if succeeded else "failed_tolerated",
                            task_id=task_id, item_index=item_index)
    rs.answer(session, token, output=answered.model_dump(mode="json"), **where)
