"""An orchestrator task and its plan's run end together (chalicelib.services.orchestration starts the run).

`on_run_finished` is called by every path that makes a run terminal — the control consumer's reports and
the reconciler (`control.finish_run` / `control.fail_run`) and the API's cancel — in that path's transaction:
a run with a `parent_task_id` completes its orchestrator task with every step's output, or fails it
(SUBTASK_FAILED naming the first failed step, or that step's own error when it failed before it had a
task). The task is finished through `results.store_outcome`, the one outcome path.

`on_task_ended` is the other direction: the orchestrator task ended first (cancelled, timed out by a
reaper, failed), so its run is cancelled in the same transaction, as the run cancel service does: open
step tasks cancelled (their hooks answer the tokens with Ymera.RunCancelled, which ends the execution),
steps not started cancelled. Rows another transaction holds (a consumer finishing that step right now) are
skipped, not waited for: that consumer wants the run row this caller holds, and waiting would deadlock.
Such a step finishes normally and its answer meets a cancelled run. Lock order is run row, then task row
(TaskService.cancel locks an orchestrator's run before it moves the task), as on the run-finished side.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from chalicelib.db.models import Task, TaskResult
from chalicelib.db.types import utcnow
from chalicelib.db.workflow_models import RunStep, WorkflowRun
from chalicelib.domain.tasks import CANCELLABLE, TaskStatus
from chalicelib.observability import logger

ACTIVE = ("running", "waiting_approval")
UNSUCCESSFUL = (TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.TIMED_OUT)


def on_run_finished(session: Session, run: WorkflowRun) -> None:
    """The run is terminal (its new status set in this session): finish the orchestrator task it belongs to."""
    if run.parent_task_id is None:
        return
    from chalicelib.services.orchestration import plan_of, workflow_step_ids
    from chalicelib.services.results import store_outcome

    session.flush()  # the run's new status and its steps' are what the queries below read
    parent = session.execute(select(Task.id, Task.status, Task.input_data, Task.started_at)
                             .where(Task.id == run.parent_task_id).with_for_update(key_share=True)).first()
    if parent is None or parent.status != TaskStatus.PROCESSING:
        return  # it ended first (cancelled, timed out): that path cancelled the run
    goal, plan = plan_of(parent.input_data)
    ids = workflow_step_ids(plan)
    rows = {r.step_id: r for r in session.scalars(select(RunStep).where(RunStep.run_id == run.id)
                                                  .execution_options(populate_existing=True))}
    task_ids = [r.task_id for r in rows.values() if r.task_id is not None]
    tasks = {t.id: t for t in session.execute(select(Task.id, Task.status, Task.error, Task.agent_id, Task.agent_type)
                                              .where(Task.id.in_(task_ids)))} if task_ids else {}
    results: dict[uuid.UUID, Any] = dict(session.execute(
        select(TaskResult.task_id, TaskResult.output_data).where(TaskResult.task_id.in_(task_ids))
    ).tuples().all()) if task_ids else {}
    steps, failed = [], None
    for s in plan:
        row = rows.get(ids[s.step_id])
        task = tasks.get(row.task_id) if row is not None and row.task_id is not None else None
        status = str(task.status) if task is not None else _status_without_task(row)
        steps.append({"step_id": s.step_id, "task_id": str(task.id) if task else None,
                      "agent_id": str(task.agent_id) if task else None,
                      "agent_type": task.agent_type if task else s.agent_type, "status": status,
                      "output": results.get(task.id) if task else None,
                      "error": (task.error if task else None) or (row.error if row is not None and status != "completed"
                                                                  else None)})
        if failed is None and row is not None and row.status == "failed":
            failed = (s, row, task)
    output = {"goal": goal, "run_id": str(run.id), "steps": steps}
    now = utcnow()
    started = parent.started_at or now
    metrics = {"duration_ms": round((now - started).total_seconds() * 1000, 3), "subtasks": len(tasks),
               "subtasks_completed": sum(1 for t in tasks.values() if t.status == TaskStatus.COMPLETED)}
    if run.status == "succeeded":
        store_outcome(session, parent.id, TaskStatus.COMPLETED, output, metrics, None, now=now)
    else:
        store_outcome(session, parent.id, TaskStatus.FAILED, output, metrics, _error(run, failed), now=now)
    logger.info("orchestrator task finished with its run", extra={"task_id": str(parent.id), "run_id": str(run.id),
                                                                  "run_status": run.status})


def _status_without_task(row: RunStep | None) -> str:
    if row is None or row.status in ("pending", "running"):
        return "not_started"
    return "failed" if row.status == "failed" else str(row.status)


def _error(run: WorkflowRun, failed: tuple[Any, RunStep, Any] | None) -> dict[str, Any]:
    if failed is None:  # nothing failed on its own: the run was cancelled or timed out as a whole
        error = run.error or {}
        return {"code": str(error.get("code") or f"RUN_{str(run.status).upper()}"),
                "message": str(error.get("message") or f"the plan's run {run.status}"),
                "details": {"run_id": str(run.id), "run_status": run.status}}
    step, row, task = failed
    if task is None:  # it failed before it had a task (no agent left, an input that no longer passes)
        error = row.error or {}
        return {"code": str(error.get("code") or "SUBTASK_FAILED"),
                "message": str(error.get("message") or f"step {step.step_id!r} failed"),
                "details": {**(error.get("details") or {}), "step_id": step.step_id}}
    status = str(task.status) if task.status in UNSUCCESSFUL else "failed"
    return {"code": "SUBTASK_FAILED", "message": f"step {step.step_id!r} {status}",
            "details": {"step_id": step.step_id, "task_id": str(task.id), "status": status,
                        "error": task.error or row.error}}


def on_task_ended(session: Session, task_id: uuid.UUID, error: dict[str, Any]) -> list[uuid.UUID]:
    """The orchestrator task is terminal: cancel its plan's run if it still runs; return the step tasks moved."""
    runs = list(session.scalars(select(WorkflowRun).where(WorkflowRun.parent_task_id == task_id,
                                                          WorkflowRun.status.in_(ACTIVE)).with_for_update()))
    moved: list[uuid.UUID] = []
    for run in runs:
        moved += cancel_run(session, run, error)
    return moved


def cancel_run(session: Session, run: WorkflowRun, error: dict[str, Any]) -> list[uuid.UUID]:
    """The run cancel service's semantics inside the caller's transaction (the run row locked by the caller)."""
    from chalicelib.workflows.steps import on_task_finished

    now = utcnow()
    run.status, run.finished_at, run.updated_at = "cancelled", now, now
    run.error = {"code": "RUN_CANCELLED", "message": error.get("message") or "the orchestrator task ended",
                 "details": {"reason": error.get("code")}}
    session.flush()
    free = list(session.scalars(select(Task.id).where(Task.run_id == run.id, Task.status.in_(CANCELLABLE))
                                .with_for_update(key_share=True, skip_locked=True)))
    moved = list(session.scalars(
        update(Task).where(Task.id.in_(free), Task.status.in_(CANCELLABLE))
        .values(status=TaskStatus.CANCELLED, completed_at=now, updated_at=now, error=error)
        .returning(Task.id).execution_options(synchronize_session=False))) if free else []
    for step_task in moved:  # each answers its token (Ymera.RunCancelled) and records its step cancelled
        on_task_finished(session, step_task)
    # Skip locked: a consumer recording that step right now wants the run row this caller holds.
    open_steps = list(session.scalars(select(RunStep.step_id).where(
        RunStep.run_id == run.id, RunStep.status.in_(("pending", "running", "waiting_approval")))
        .with_for_update(skip_locked=True)))
    session.execute(update(RunStep).where(RunStep.run_id == run.id, RunStep.step_id.in_(open_steps),
                                          RunStep.status.in_(("pending", "running", "waiting_approval")))
                    .values(status="cancelled", finished_at=now, updated_at=now,
                            error={"code": "RUN_CANCELLED", "message": "the run was cancelled"})
                    .execution_options(synchronize_session=False))
    logger.info("a plan's run cancelled with its orchestrator task",
                extra={"run_id": str(run.id), "task_id": str(run.parent_task_id), "step_tasks": len(moved)})
    return moved
