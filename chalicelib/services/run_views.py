"""What `GET /runs/{run_id}` shows, and the bounded JSON Schema check runs and decisions use.

A run's step timeline is every step of its pinned version in definition order, joined with its RunStep row
and, for for_each steps, the latest task of each item: three statements whatever the run's size. Step
outputs stay in Postgres at any size; the timeline shows them inline up to `inline_bytes` of JSON, and a
reference to the task holding the rest beyond.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from chalicelib.db.models import Task
from chalicelib.db.workflow_models import RunStep, WorkflowRun, WorkflowVersion
from chalicelib.errors import RunInputInvalidError, ValidationError
from chalicelib.schemas.workflows import (
    ApprovalPublic,
    ExecutionPublic,
    ForEachPublic,
    ItemPublic,
    RunPublic,
    RunStepPublic,
    RunSummary,
)
from chalicelib.workflows.definition import WorkflowDefinition, WorkflowStep

#: a step output larger than this (as JSON) is shown by reference (docs/workflows-api.md).
DEFAULT_INLINE_BYTES = 64 * 1024
#: a for_each item's status from its latest task's status.
_ITEM_STATUS = {"pending": "pending", "queued": "pending", "processing": "running", "completed": "succeeded",
                "failed": "failed", "timed_out": "failed", "cancelled": "cancelled"}


def schema_errors(schema: dict[str, Any], payload: Any) -> list[dict[str, Any]]:
    """Violations of `payload` against a user's JSON Schema, with the validation agent's bounds: schema and
    payload size and depth, `$ref` expansion, RE2 patterns, a keyword step budget, at most 100 errors.

    A schema beyond those bounds (or not a valid schema) raises ValueError with the reason."""
    from pydantic import ValidationError as PydanticValidationError

    from chalicelib.agents.validation import ValidationAgent, ValidationInput
    from chalicelib.errors import AgentInputError

    try:
        check = ValidationInput.model_validate({"schema": schema, "payload": payload})
        output = ValidationAgent().run(check, {}).output
    except PydanticValidationError as exc:
        raise ValueError("; ".join(err["msg"] for err in exc.errors(include_input=False, include_url=False))) from exc
    except AgentInputError as exc:
        raise ValueError(exc.message) from exc
    return [{"path": e["path"], "message": e["message"], "validator": e["validator"]} for e in output["errors"]]


def json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), default=str).encode())


def shown_output(row: RunStep, inline_bytes: int) -> dict[str, Any] | None:
    if row.output is None:
        return None
    size = json_size(row.output)
    if size <= inline_bytes:
        return row.output
    return {"truncated": True, "task_id": str(row.task_id) if row.task_id else None, "bytes": size}


def summary(run: WorkflowRun, version_number: int) -> RunSummary:
    return RunSummary(id=run.id, workflow_id=run.workflow_id, version=version_number, version_id=run.version_id,
                      status=run.status, input=run.input, output=run.output, error=run.error,  # type: ignore[arg-type]
                      execution=run.execution, created_at=run.created_at, updated_at=run.updated_at,
                      finished_at=run.finished_at)


def _approval(row: RunStep | None) -> ApprovalPublic:
    decision = (row.decision or {}) if row is not None else {}
    approved = decision.get("approved")
    return ApprovalPublic(
        waiting=bool(row is not None and row.status == "waiting_approval" and row.approval_token
                     and row.decided_at is None),
        decision=None if approved is None else ("approved" if approved else "rejected"),
        comment=decision.get("comment"), payload=decision.get("payload"),
        decided_by=row.decided_by if row is not None else None, decided_at=row.decided_at if row is not None else None)


def _step(step: WorkflowStep, row: RunStep | None, items: list[ItemPublic], inline_bytes: int) -> RunStepPublic:
    for_each = None
    if step.for_each is not None:
        for_each = ForEachPublic(items_total=row.items_total if row else None,
                                 items_failed=row.items_failed if row else 0, items=items)
    return RunStepPublic(
        step_id=step.step_id, type=step.type, status=(row.status if row else "pending"),  # type: ignore[arg-type]
        attempts=row.attempts if row else 0, started_at=row.started_at if row else None,
        finished_at=row.finished_at if row else None, task_id=row.task_id if row else None,
        output=shown_output(row, inline_bytes) if row else None, error=row.error if row else None,
        for_each=for_each, approval=_approval(row) if step.type == "approval" else None)


def _items(session: Session, run_id: uuid.UUID) -> dict[str, list[ItemPublic]]:
    """The latest task of every for_each item of the run (a retried item has several), in index order."""
    rows = session.execute(
        select(Task.step_id, Task.item_index, Task.id, Task.status)
        .where(Task.run_id == run_id, Task.item_index.is_not(None))
        .order_by(Task.step_id, Task.item_index, Task.created_at)).all()
    latest: dict[tuple[str, int], ItemPublic] = {}
    for step_id, index, task_id, status in rows:
        at = int(index or 0)  # never None: the query selects items only
        latest[(str(step_id), at)] = ItemPublic(index=at, status=_ITEM_STATUS.get(status, status), task_id=task_id)
    out: dict[str, list[ItemPublic]] = {}
    for (step_id, _), item in latest.items():  # insertion order is (step_id, index) order
        out.setdefault(step_id, []).append(item)
    return out


def detail(session: Session, run: WorkflowRun, version: WorkflowVersion, *,
           inline_bytes: int = DEFAULT_INLINE_BYTES) -> RunPublic:
    definition = WorkflowDefinition.model_validate(version.definition)
    rows = {r.step_id: r for r in session.scalars(select(RunStep).where(RunStep.run_id == run.id)
                                                 .execution_options(populate_existing=True))}
    items = _items(session, run.id) if any(s.for_each is not None for s in definition.steps) else {}
    steps = [_step(s, rows.get(s.step_id), items.get(s.step_id, []), inline_bytes) for s in definition.steps]
    executions = [ExecutionPublic(execution=int(e.get("execution", 0)), arn=e.get("arn"),
                                  started_at=e.get("started_at"),
                                  mode="redrive" if e.get("mode") == "redrive" else "start")
                  for e in (run.executions or []) if isinstance(e, dict)]
    return RunPublic(**summary(run, version.version).model_dump(), executions=executions, steps=steps)


def check_input(definition: WorkflowDefinition, data: dict[str, Any]) -> None:
    if definition.input_schema is None:
        return
    try:
        found = schema_errors(definition.input_schema, data)
    except ValueError as exc:
        raise RunInputInvalidError(f"the run input cannot be checked: {exc}", {"errors": []}) from exc
    if found:
        raise RunInputInvalidError("the run input does not match the workflow's input_schema", {"errors": found})


def check_payload(schema: dict[str, Any], payload: Any) -> None:
    try:
        found = schema_errors(schema, payload)
    except ValueError as exc:
        raise ValidationError(f"the payload cannot be checked: {exc}", {"errors": []}) from exc
    if found:
        raise ValidationError("the decision's payload does not match the step's input_schema", {"errors": found})
