"""What both workflow consumers share: a token message's run and step read from Postgres, the scope its
references resolve against, the short-circuits, and answers written to the outbox (destination "states").

Every answer to a task token goes through an outbox row written in the transaction that decided it, so an
answer is never lost when a process dies after its commit: the caller publishes it right after the commit
(`committed_answers` + `OutboxRelay.publish_one`), and the scheduled relay is the safety net.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from chalicelib.db.models import OutboxMessage, Task, TaskResult
from chalicelib.db.types import utcnow
from chalicelib.db.workflow_models import RunStep, WorkflowRun, WorkflowVersion
from chalicelib.workflows import messages as m
from chalicelib.workflows import scope as refs
from chalicelib.workflows.definition import WorkflowDefinition, WorkflowStep

#: the outbox destination of token answers (routed to the TaskCallbacks port, never to SQS).
STATES = "states"
#: session.info key: outbox ids of answers written in this transaction (published after the commit).
ANSWERS_KEY = "ymera.workflow_answers"
RUN_TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")
#: a step output larger than this is shown by reference in a run's output (it stays in Postgres).
INLINE_OUTPUT_BYTES = 200 * 1024


class StepFailure(Exception):
    """The step cannot run as asked (unresolvable reference, input against the schema, no agent...)."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.details = code, message, details or {}

    def as_error(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


@dataclass
class StepContext:
    run: WorkflowRun
    version: WorkflowVersion
    definition: WorkflowDefinition
    step: WorkflowStep
    row: RunStep


@lru_cache(maxsize=256)
def _definition(version_id: uuid.UUID, text: str) -> WorkflowDefinition:
    # Versions are immutable: parsed once per process.
    return WorkflowDefinition.model_validate_json(text)


def definition_of(version: WorkflowVersion) -> WorkflowDefinition:
    return _definition(version.id, json.dumps(version.definition, sort_keys=True))


def load(session: Session, run_id: uuid.UUID, step_id: str, *, lock: bool = True) -> StepContext | None:
    """The run, its version, the step's definition and its row (locked: a run's answers are serialised).

    None if the run does not exist or the step is not in its version (a malformed or foreign message)."""
    # Run row first, then the step's: every writer of a run's rows (consumers, hooks, API cancel/decide, the
    # reconciler) takes them in this order, so none deadlocks another. FOR NO KEY UPDATE: a step task's insert
    # (its run_id foreign key takes KEY SHARE on the run) does not wait for it.
    stmt_run = select(WorkflowRun).where(WorkflowRun.id == run_id)
    run = session.scalars(stmt_run.with_for_update(key_share=True) if lock else stmt_run).first()
    if run is None:
        return None
    version = session.get(WorkflowVersion, run.version_id)
    assert version is not None  # a foreign key
    definition = definition_of(version)
    try:
        step = definition.step(step_id)
    except KeyError:
        return None
    stmt = select(RunStep).where(RunStep.run_id == run_id, RunStep.step_id == step_id)
    row = session.scalars(stmt.with_for_update() if lock else stmt).first()
    if row is None:  # the API writes every step at start; a missing one is created rather than lost
        row = RunStep(run_id=run_id, step_id=step_id, status="pending", attempts=0, items_failed=0)
        session.add(row)
        session.flush()
    return StepContext(run, version, definition, step, row)


def step_outputs(session: Session, run_id: uuid.UUID, step_ids: set[str]) -> dict[str, dict[str, Any]]:
    """`{"<step_id>": {"output": ..., "status": ...}}` for the reference scope; for_each outputs expanded."""
    if not step_ids:
        return {}
    rows = session.scalars(select(RunStep).where(RunStep.run_id == run_id, RunStep.step_id.in_(step_ids)))
    return {r.step_id: {"output": expand_output(session, r), "status": r.status} for r in rows}


def expand_output(session: Session, row: RunStep) -> Any:
    """A step's output as references see it: a for_each step's `items` are its items' outputs in order."""
    output = row.output
    if row.items_total is None or not isinstance(output, dict) or "results" not in output:
        return output
    results: dict[str, Any] = output["results"]
    task_ids = [uuid.UUID(r["task_id"]) for r in results.values() if r.get("task_id")]
    by_task: dict[uuid.UUID, Any] = dict(session.execute(select(TaskResult.task_id, TaskResult.output_data)
                                   .where(TaskResult.task_id.in_(task_ids))).tuples().all()) if task_ids else {}
    items: list[Any] = []
    for index in range(row.items_total):
        r = results.get(str(index)) or {}
        if r.get("status") != "succeeded":
            items.append(None)
        elif "output" in r:
            items.append(r["output"])
        else:
            items.append(by_task.get(uuid.UUID(r["task_id"])))
    return {"items": items, "items_total": row.items_total, "items_failed": row.items_failed}


def scope(session: Session, ctx: StepContext, item_index: int | None = None) -> dict[str, Any]:
    """What the step's references and condition resolve against (only the steps they name are read)."""
    step = ctx.step
    named = refs.step_ids_in(step.input_data) | (refs.step_ids_in(step.when.path) if step.when else set())
    named |= refs.step_ids_in(step.for_each) if step.for_each else set()
    out: dict[str, Any] = {"input": ctx.run.input or {}, "steps": step_outputs(session, ctx.run.id, named)}
    if item_index is not None:
        items = ctx.row.items or []
        if item_index >= len(items):
            raise StepFailure("ITEM_NOT_FOUND", f"step {step.step_id!r} has no item {item_index}",
                              {"step_id": step.step_id, "item_index": item_index, "items": len(items)})
        out["item"] = items[item_index]
    return out


def skipped_reason(session: Session, ctx: StepContext, data: dict[str, Any]) -> str | None:
    """Why the step is skipped ("condition" / "dependencies"), or None if it runs."""
    step = ctx.step
    if step.depends_on:
        statuses = set(session.scalars(select(RunStep.status).where(RunStep.run_id == ctx.run.id,
                                                                    RunStep.step_id.in_(step.depends_on))))
        if statuses == {"skipped"}:
            return "dependencies"
    if step.when is not None and not refs.evaluate(step.when, data):
        return "condition"
    return None


def resolve_input(ctx: StepContext, data: dict[str, Any]) -> dict[str, Any]:
    try:
        resolved = refs.resolve(ctx.step.input_data, data)
    except refs.ReferenceUnresolved as exc:
        raise StepFailure("REFERENCE_UNRESOLVED", f"step {ctx.step.step_id!r}: {exc}",
                          {"step_id": ctx.step.step_id, "reference": getattr(exc, "reference", None)}) from exc
    assert isinstance(resolved, dict)
    return resolved


def answer(session: Session, token: str, *, run_id: uuid.UUID, step_id: str, aggregate_id: uuid.UUID | None = None,
           output: dict[str, Any] | None = None, error: str | None = None, cause: str = "",
           item_index: int | None = None) -> OutboxMessage:
    """Write the token's answer to the outbox (published after the commit); succeed if `error` is None."""
    where = {"run_id": str(run_id), "step_id": step_id, "item_index": item_index}
    payload: dict[str, Any] = ({"action": "succeed", "token": token, "output": output or {}, **where}
                               if error is None else
                               {"action": "fail", "token": token, "error": error, "cause": cause[:32_000], **where})
    row = OutboxMessage(id=uuid.uuid4(), aggregate_id=aggregate_id or run_id, destination=STATES, payload=payload)
    session.add(row)
    session.info.setdefault(ANSWERS_KEY, []).append(row.id)
    touch(session, run_id)
    return row


def committed_answers(session: Session) -> list[uuid.UUID]:
    """The answers the session's (now committed) transactions wrote; cleared so each is published once."""
    ids: list[uuid.UUID] = session.info.pop(ANSWERS_KEY, [])
    return ids


def touch(session: Session, run_id: uuid.UUID) -> None:
    """The run moved: the reconciler leaves it alone for `workflow_reconcile_after_seconds`."""
    run = session.get(WorkflowRun, run_id)
    if run is not None:
        run.updated_at = utcnow()


def cause_of(error: dict[str, Any] | None, fallback: str = "the step failed") -> str:
    if not error:
        return fallback
    return f"{error.get('code', 'ERROR')}: {error.get('message', fallback)}"


def short_circuit(session: Session, ctx: StepContext, msg: m.TokenMessage) -> bool:
    """Answer the token at once if the run is over, the step (or item) already succeeded, or it is skipped.

    Returns True when answered (the caller does nothing more). `skipped` needs the scope, so a reference the
    condition cannot resolve raises StepFailure for the caller to fail the step with."""
    run, row = ctx.run, ctx.row
    where: dict[str, Any] = {"run_id": run.id, "step_id": msg.step_id, "item_index": msg.item_index}
    if run.status in RUN_TERMINAL or msg.execution < run.execution:
        answer(session, msg.token, error=m.ERROR_RUN_CANCELLED, cause=f"the run is {run.status}"
               + ("" if msg.execution >= run.execution else f" (execution {msg.execution} was superseded)"), **where)
        return True
    recorded = recorded_answer(row, msg.item_index)
    if recorded is not None:
        answer(session, msg.token, output=recorded, **where)
        return True
    if msg.item_index is not None:
        return False  # the skip rule applies to the whole step (its FOREACH), not to items
    reason = skipped_reason(session, ctx, scope(session, ctx))
    if reason is None:
        return False
    mark_skipped(row, reason)
    answer(session, msg.token, output=m.StepAnswer(step_id=msg.step_id, status="skipped").model_dump(mode="json"),
           **where)
    return True


def mark_skipped(row: RunStep, reason: str) -> None:
    now = utcnow()
    row.status, row.output, row.error, row.finished_at = "skipped", {"skipped": reason}, None, now
    row.started_at = row.started_at or now


def recorded_answer(row: RunStep, item_index: int | None) -> dict[str, Any] | None:
    """The answer of a step (or item) that already succeeded: a redrive's new execution gets it again."""
    if item_index is None:
        if row.status == "succeeded" and row.items_total is None:
            return m.StepAnswer(step_id=row.step_id, status="succeeded", task_id=row.task_id).model_dump(mode="json")
        if row.status == "skipped":
            return m.StepAnswer(step_id=row.step_id, status="skipped").model_dump(mode="json")
        return None
    result = ((row.output or {}).get("results") or {}).get(str(item_index)) or {}
    status = result.get("status")
    if status == "failed" and row.status == "succeeded":
        status = "failed_tolerated"  # the step succeeded within its tolerance: a redrive does not re-run it
    if status in ("succeeded", "failed_tolerated"):
        return m.StepAnswer(step_id=row.step_id, status=status, item_index=item_index,
                            task_id=uuid.UUID(result["task_id"]) if result.get("task_id") else None
                            ).model_dump(mode="json")
    return None


def start(row: RunStep, now: datetime | None = None) -> None:
    now = now or utcnow()
    if row.status in ("pending", "failed", "cancelled"):
        row.status, row.error, row.finished_at = "running", None, None
    row.started_at = row.started_at or now
    row.attempts += 1


def task_output(session: Session, task_id: uuid.UUID) -> dict[str, Any] | None:
    return session.scalar(select(TaskResult.output_data).where(TaskResult.task_id == task_id))


def task_description(run_id: uuid.UUID, step_id: str, execution: int) -> str:
    """A step task's description; it also says which execution created it (attempts are counted per execution)."""
    return f"step {step_id} of workflow run {run_id}, execution {execution}"


def item_attempts(session: Session, run: WorkflowRun, step_id: str, item_index: int | None,
                  description: str | None) -> int:
    """Runs of this step (or item) in the execution that created this task: the tasks it created for it."""
    stmt = select(Task.id).where(Task.run_id == run.id, Task.step_id == step_id,
                                 Task.item_index.is_(None) if item_index is None else Task.item_index == item_index)
    if description is not None:
        stmt = stmt.where(Task.description == description)
    return len(list(session.scalars(stmt)))


def output_or_reference(row: RunStep, output: Any) -> Any:
    """A step's output for the run's output: inline when small, else where it is kept."""
    size = len(json.dumps(output, default=str))
    if size <= INLINE_OUTPUT_BYTES:
        return output
    return {"reference": {"run_id": str(row.run_id), "step_id": row.step_id,
                          "task_id": str(row.task_id) if row.task_id else None, "bytes": size}}


def record_late(session: Session, payload: dict[str, Any], now: datetime) -> None:
    """An answer arrived after its token closed (TaskTimedOut, InvalidToken...): kept on the step, not raised."""
    from chalicelib.observability import logger

    try:
        run_id = uuid.UUID(str(payload.get("run_id")))
    except ValueError:
        return
    row = session.get(RunStep, (run_id, str(payload.get("step_id"))))
    logger.info("late workflow answer recorded", extra={"run_id": str(run_id), "step_id": payload.get("step_id"),
                                                        "action": payload.get("action")})
    if row is None:
        return
    late = {"action": payload.get("action"), "item_index": payload.get("item_index"), "at": now.isoformat()}
    row.error = {**(row.error or {}), "late_completion": late}


def storable_output(value: Any) -> Any:
    from chalicelib.services.results import storable

    return storable(value)
