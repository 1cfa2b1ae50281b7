"""Workflow run use cases: start, list, read (with its step timeline), approval decisions, cancel, redrive.

Postgres is the truth of what the API shows; Step Functions sequences the steps. Every change that a
consumer must see is committed before the Step Functions call that makes a consumer look (a run and its
steps before StartExecution, a redriven run's reset steps before its new execution). A start that cannot
reach Step Functions (or SQS, for the queue URLs) ends the run `failed` with START_FAILED and answers 503:
no run stays `running` without an execution. Answers to task tokens (decisions, a cancelled approval) are
outbox rows (destination "states") committed with the change, then published at once (`publish_answer`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from chalicelib.db.models import IdempotencyKey, Task
from chalicelib.db.session import Database, rowcount
from chalicelib.db.types import utcnow
from chalicelib.db.workflow_models import RunStep, Workflow, WorkflowRun, WorkflowVersion
from chalicelib.domain.tasks import CANCELLABLE
from chalicelib.errors import (
    ApprovalAlreadyDecidedError,
    ApprovalNotPendingError,
    ConflictError,
    DependencyUnavailableError,
    NotFoundError,
    RunNotCancellableError,
    RunNotFoundError,
    RunNotRedrivableError,
    ValidationError,
)
from chalicelib.observability import logger
from chalicelib.schemas.workflows import DecisionRequest, RunListQuery, RunPublic, RunStart, RunSummary
from chalicelib.services import audit
from chalicelib.services import run_views as views
from chalicelib.services.meta import RequestMeta
from chalicelib.services.pagination import after_cursor, encode_cursor
from chalicelib.services.run_answers import PublishAnswer, answer
from chalicelib.services.run_launch import Launcher
from chalicelib.services.workflows import current_version, owned_workflow
from chalicelib.workflows.definition import WorkflowDefinition
from chalicelib.workflows.messages import ERROR_APPROVAL_REJECTED, ERROR_RUN_CANCELLED

if TYPE_CHECKING:
    from chalicelib.services.idempotency import IdempotencyStore, IdempotentRequest
    from chalicelib.services.quotas import Quotas

ACTIVE = ("running", "waiting_approval")
REDRIVABLE = ("failed", "timed_out")
#: step statuses a redrive runs again (succeeded and skipped steps keep their outcome).
RERUN = ("failed", "cancelled", "timed_out")
#: the existing task cancellation (TaskService.cancel): (owner, task id, meta).
CancelTask = Callable[[uuid.UUID, uuid.UUID, RequestMeta], Any]


@dataclass(frozen=True)
class StartResult:
    status_code: int
    body: dict[str, Any]
    run_id: uuid.UUID | None
    replayed: bool


class RunService:
    def __init__(self, db: Database, launcher: Launcher, *, cancel_task: CancelTask | None = None,
                 publish_answer: PublishAnswer | None = None, idempotency: IdempotencyStore | None = None,
                 quotas: Quotas | None = None, inline_bytes: int = views.DEFAULT_INLINE_BYTES) -> None:
        self.db = db
        self.launcher = launcher
        self.cancel_task = cancel_task
        self.publish_answer = publish_answer
        self.idempotency = idempotency
        self.quotas = quotas
        self.inline_bytes = inline_bytes

    # --- start ------------------------------------------------------------------------------------------------

    def start(self, user_id: uuid.UUID, workflow_id: uuid.UUID, req: RunStart, meta: RequestMeta,
              key: IdempotentRequest | None = None) -> StartResult:
        """202 with the run. Under an Idempotency-Key the key is claimed with the run and completed once the
        execution started: a replay returns that answer, a concurrent one is 409 IN_PROGRESS, and a start
        that failed releases the key (a retry tries again; the failed run stays, `failed`)."""
        with self.db.transaction() as session:
            if key is not None:
                if self.idempotency is None:
                    raise RuntimeError("RunService was built without an IdempotencyStore")
                stored = self.idempotency.claim(session, user_id, key)
                if stored is not None:
                    return StartResult(stored.status_code, stored.body, stored.resource_id, replayed=True)
            workflow = owned_workflow(session, user_id, workflow_id, editable=True)
            run = self.create_in(session, user_id, workflow, current_version(session, workflow), req.input, meta)
            run_id, version_id = run.id, run.version_id
        self._launch(run_id, version_id, 1, "start", user_id=user_id, key=key)
        with self.db.transaction() as session:
            body = self._detail(session, self._run(session, user_id, run_id)).model_dump(mode="json")
            if key is not None and self.idempotency is not None:
                self.idempotency.complete(session, user_id, key, 202, body, run_id)
        return StartResult(202, body, run_id, replayed=False)

    def create_in(self, session: Session, user_id: uuid.UUID, workflow: Workflow, version: WorkflowVersion,
                  run_input: dict[str, Any], meta: RequestMeta | None = None, *,
                  parent_task_id: uuid.UUID | None = None) -> WorkflowRun:
        """A run and its pending steps, in the caller's transaction (the caller owns `workflow`). Start it with
        `launch(run)` once that transaction committed: consumers must find the rows the execution names."""
        definition = WorkflowDefinition.model_validate(version.definition)
        views.check_input(definition, run_input)
        if self.quotas is not None:  # a run creates tasks: it is refused when today's task quota is spent
            self.quotas.check_tasks_today(session, user_id, utcnow())
        run = WorkflowRun(user_id=user_id, workflow_id=workflow.id, version_id=version.id, status="running",
                          input=run_input, execution=1, executions=[], parent_task_id=parent_task_id)
        session.add(run)
        session.flush()
        session.add_all([RunStep(run_id=run.id, step_id=s.step_id, status="pending") for s in definition.steps])
        audit.record(session, user_id=user_id, event_type="workflow_run.started", action="start",
                     resource_type="workflow_run", resource_id=run.id,
                     details={"workflow_id": str(workflow.id), "version": version.version}, meta=meta)
        session.flush()
        return run

    def launch(self, run: WorkflowRun) -> None:
        """Execution 1 of a committed run (`create_in`). Step Functions unreachable: the run ends failed
        (START_FAILED) and DependencyUnavailableError is raised."""
        self._launch(run.id, run.version_id, 1, "start", user_id=run.user_id)

    def _launch(self, run_id: uuid.UUID, version_id: uuid.UUID, execution: int, mode: str, *,
                user_id: uuid.UUID, key: IdempotentRequest | None = None) -> None:
        try:
            arn = self.launcher.start(run_id, version_id, execution)
        except Exception as exc:
            unavailable = exc if isinstance(exc, DependencyUnavailableError) else self.launcher.unavailable(exc)
            self._start_failed(run_id, user_id, key, exc)
            if unavailable is not None:
                raise unavailable from exc
            raise
        with self.db.transaction() as session:
            run = session.get(WorkflowRun, run_id, with_for_update=True, populate_existing=True)
            assert run is not None
            entry = {"execution": execution, "arn": arn, "started_at": utcnow().isoformat(), "mode": mode}
            run.executions = [*(run.executions or []), entry]
            run.execution_arn = arn

    def _start_failed(self, run_id: uuid.UUID, user_id: uuid.UUID, key: IdempotentRequest | None,
                      exc: BaseException, *, code: str = "START_FAILED") -> None:
        logger.warning("workflow run could not start", extra={"run_id": str(run_id), "error": type(exc).__name__})
        now = utcnow()
        message = str(getattr(exc, "message", None) or type(exc).__name__)[:500]
        with self.db.transaction() as session:
            session.execute(update(WorkflowRun).where(WorkflowRun.id == run_id, WorkflowRun.status.in_(ACTIVE))
                            .values(status="failed", finished_at=now, updated_at=now,
                                    error={"code": code, "message": message})
                            .execution_options(synchronize_session=False))
            if key is not None:  # the failure is not the key's answer: a retry with it starts again
                session.execute(delete(IdempotencyKey).where(IdempotencyKey.user_id == user_id,
                                                             IdempotencyKey.key == key.key)
                                .execution_options(synchronize_session=False))

    # --- read -------------------------------------------------------------------------------------------------

    def _run(self, session: Session, user_id: uuid.UUID | None, run_id: uuid.UUID, *,
             for_update: bool = False) -> WorkflowRun:
        """The run, owner-filtered (`user_id` None: any owner, for admins' decisions); else 404 RUN_NOT_FOUND."""
        stmt = select(WorkflowRun).where(WorkflowRun.id == run_id)
        if user_id is not None:
            stmt = stmt.where(WorkflowRun.user_id == user_id)
        if for_update:
            stmt = stmt.with_for_update()
        run = session.scalar(stmt.execution_options(populate_existing=True))
        if run is None:
            raise RunNotFoundError("run not found", {"run_id": str(run_id)})
        return run

    def _detail(self, session: Session, run: WorkflowRun) -> RunPublic:
        version = session.get(WorkflowVersion, run.version_id)
        assert version is not None
        return views.detail(session, run, version, inline_bytes=self.inline_bytes)

    def get(self, user_id: uuid.UUID, run_id: uuid.UUID) -> RunPublic:
        with self.db.read() as session:
            return self._detail(session, self._run(session, user_id, run_id))

    def list(self, user_id: uuid.UUID, workflow_id: uuid.UUID, query: RunListQuery,
             limit: int) -> tuple[list[RunSummary], str | None]:
        """Newest first, one statement per page (plus the workflow's ownership check)."""
        stmt = (select(WorkflowRun, WorkflowVersion.version)
                .join(WorkflowVersion, WorkflowVersion.id == WorkflowRun.version_id)
                .where(WorkflowRun.user_id == user_id, WorkflowRun.workflow_id == workflow_id))
        if query.status is not None:
            stmt = stmt.where(WorkflowRun.status == query.status)
        for name, bound in (("created_after", query.created_after), ("created_before", query.created_before)):
            if bound is None:
                continue
            if bound.tzinfo is None:
                raise ValidationError(f"{name} must include a timezone (e.g. 2026-01-01T00:00:00Z)", {"field": name})
            stmt = stmt.where(WorkflowRun.created_at >= bound if name == "created_after"
                              else WorkflowRun.created_at < bound)
        if query.cursor:
            stmt = stmt.where(after_cursor(WorkflowRun.created_at, WorkflowRun.id, query.cursor))
        stmt = stmt.order_by(WorkflowRun.created_at.desc(), WorkflowRun.id.desc()).limit(limit + 1)
        with self.db.read() as session:
            owned_workflow(session, user_id, workflow_id)
            rows = session.execute(stmt).all()
        page = [views.summary(run, number) for run, number in rows[:limit]]
        last = rows[limit - 1][0] if len(rows) > limit else None
        return page, encode_cursor(last.created_at, last.id) if last is not None else None

    # --- approvals --------------------------------------------------------------------------------------------

    def decide(self, actor_id: uuid.UUID, is_admin: bool, run_id: uuid.UUID, step_id: str, req: DecisionRequest,
               meta: RequestMeta) -> RunPublic:
        """Only the run's owner or an admin; only while the step waits with a token; once (a conditional UPDATE
        decides between two concurrent decisions)."""
        now = utcnow()
        with self.db.transaction() as session:
            run = self._run(session, None if is_admin else actor_id, run_id)
            version = session.get(WorkflowVersion, run.version_id)
            assert version is not None
            try:
                step = WorkflowDefinition.model_validate(version.definition).step(step_id)
            except KeyError:
                raise NotFoundError("step not found", {"run_id": str(run_id), "step_id": step_id}) from None
            if step.type != "approval":
                raise ApprovalNotPendingError("this step is not an approval", {"step_id": step_id})
            if run.status not in ACTIVE:  # an ended run's execution has no token left to answer
                raise ApprovalNotPendingError(f"the run is {run.status}", {"step_id": step_id, "status": run.status})
            if step.input_schema is not None and (req.approve or req.payload is not None):
                views.check_payload(step.input_schema, req.payload if req.payload is not None else {})
            decision = {"approved": req.approve, "comment": req.comment, "payload": req.payload}
            if req.approve:
                outcome: dict[str, Any] = {"status": "succeeded", "output": decision, "error": None}
            else:
                outcome = {"status": "failed", "output": None,
                           "error": {"code": "APPROVAL_REJECTED", "message": req.comment or "rejected"}}
            # "Not decided" is decided_at IS NULL: a JSON column set to None holds JSON null, not SQL NULL, so
            # `decision IS NULL` misses rows whose decision was cleared (a redrive, a re-sent approval).
            waiting = (RunStep.run_id == run_id, RunStep.step_id == step_id, RunStep.status == "waiting_approval",
                       RunStep.approval_token.is_not(None), RunStep.decided_at.is_(None))
            token = session.scalar(select(RunStep.approval_token).where(*waiting))
            moved = token is not None and rowcount(session.execute(
                update(RunStep).where(*waiting)
                .values(decision=decision, decided_by=actor_id, decided_at=now, finished_at=now, updated_at=now,
                        **outcome).execution_options(synchronize_session=False)))
            if not moved:
                row = session.scalar(select(RunStep).where(RunStep.run_id == run_id, RunStep.step_id == step_id)
                                     .execution_options(populate_existing=True))
                if row is not None and row.decided_at is not None:
                    raise ApprovalAlreadyDecidedError("this approval was already decided", {
                        "step_id": step_id, "decided_at": row.decided_at.isoformat() if row.decided_at else None})
                raise ApprovalNotPendingError("this approval is not waiting for a decision",
                                              {"step_id": step_id, "status": row.status if row else "pending"})
            if req.approve:
                payload = {"action": "succeed", "token": token, "output": {"step_id": step_id, "status": "succeeded",
                                                                           "approved": True, **decision}}
            else:
                payload = {"action": "fail", "token": token, "error": ERROR_APPROVAL_REJECTED,
                           "cause": f"APPROVAL_REJECTED: {req.comment or 'rejected'}"[:32768]}
            written = answer(session, run_id, payload)
            _back_to_running(session, run_id)
            audit.record(session, user_id=actor_id, event_type="workflow_run.decision", action="decide",
                         resource_type="workflow_run", resource_id=run_id,
                         details={"step_id": step_id, "approve": req.approve, "decided_by": str(actor_id),
                                  "decided_at": now.isoformat(), "owner": str(run.user_id)}, meta=meta)
        self._publish([written])
        with self.db.read() as session:
            return self._detail(session, self._run(session, None, run_id))

    def _publish(self, answers: Sequence[tuple[uuid.UUID, dict[str, Any]]]) -> None:
        if self.publish_answer is None:
            return  # the scheduled relay publishes them
        for outbox_id, payload in answers:
            self.publish_answer(outbox_id, payload)

    # --- cancel and redrive -----------------------------------------------------------------------------------

    def cancel(self, user_id: uuid.UUID, run_id: uuid.UUID, meta: RequestMeta) -> RunPublic:
        now = utcnow()
        with self.db.transaction() as session:
            run = self._run(session, user_id, run_id, for_update=True)
            if run.status not in ACTIVE:
                raise RunNotCancellableError(f"the run is already {run.status}", {"status": run.status})
            previous = run.status
            run.status, run.finished_at = "cancelled", now
            run.error = {"code": "RUN_CANCELLED", "message": "cancelled by its owner"}
            answers = [answer(session, run_id, {"action": "fail", "token": row.approval_token,
                                                 "error": ERROR_RUN_CANCELLED, "cause": "RUN_CANCELLED: the run "
                                                 "was cancelled"})
                       for row in session.scalars(select(RunStep).where(
                           RunStep.run_id == run_id, RunStep.status == "waiting_approval",
                           RunStep.approval_token.is_not(None), RunStep.decided_at.is_(None)))]
            _cancel_steps(session, run_id, ("pending", "waiting_approval"), now)
            open_tasks = list(session.scalars(select(Task.id).where(Task.run_id == run_id,
                                                                    Task.status.in_(CANCELLABLE))))
            audit.record(session, user_id=user_id, event_type="workflow_run.cancelled", action="cancel",
                         resource_type="workflow_run", resource_id=run_id,
                         details={"from": previous, "open_tasks": len(open_tasks)}, meta=meta)
            arn = run.execution_arn
        for task_id in open_tasks:  # each through the task service: its hook fails the step's token
            try:
                if self.cancel_task is not None:
                    self.cancel_task(user_id, task_id, meta)
            except ConflictError:
                logger.info("a run's task finished while the run was cancelled", extra={"task_id": str(task_id)})
        with self.db.transaction() as session:  # steps still running with no task (engines, for_each items)
            _cancel_steps(session, run_id, ("running",), utcnow())
        self._publish(answers)
        if arn is not None:
            self.launcher.stop(arn)
        return self.get(user_id, run_id)

    def redrive(self, user_id: uuid.UUID, run_id: uuid.UUID, meta: RequestMeta) -> RunPublic:
        """Failed/cancelled/timed-out steps back to `pending`, the run `running`; RedriveExecution where the
        endpoint has it (same execution), else a new execution `<run_id.hex>-<n+1>` of the same version."""
        with self.db.transaction() as session:
            run = self._run(session, user_id, run_id, for_update=True)
            if run.status not in REDRIVABLE:
                raise RunNotRedrivableError(f"only failed or timed-out runs can be redriven; this one is {run.status}",
                                            {"status": run.status})
            if session.scalar(select(Workflow.deleted_at).where(Workflow.id == run.workflow_id)) is not None:
                raise RunNotRedrivableError("the workflow was deleted", {"workflow_id": str(run.workflow_id)})
            # `output` is kept: a for_each step's holds its items' results, and the items that succeeded are
            # short-circuited from it (only the failed ones run again, and are counted again in items_failed).
            session.execute(update(RunStep).where(RunStep.run_id == run_id, RunStep.status.in_(RERUN))
                            .values(status="pending", error=None, finished_at=None, items_failed=0,
                                    approval_token=None, decision=None, decided_by=None, decided_at=None,
                                    updated_at=utcnow()).execution_options(synchronize_session=False))
            previous = run.status
            run.status, run.error, run.finished_at = "running", None, None
            audit.record(session, user_id=user_id, event_type="workflow_run.redriven", action="redrive",
                         resource_type="workflow_run", resource_id=run_id,
                         details={"from": previous, "execution": run.execution}, meta=meta)
            arn, execution, version_id = run.execution_arn, run.execution, run.version_id
            # RedriveExecution only resumes the execution the run is on; if that one never started (a start that
            # failed), a fresh execution is the only way, with a number no earlier attempt can have used.
            current = bool(run.executions) and run.executions[-1].get("execution") == execution
        try:
            redriven = arn is not None and current and self.launcher.redrive(arn)
        except Exception as exc:
            unavailable = exc if isinstance(exc, DependencyUnavailableError) else self.launcher.unavailable(exc)
            self._start_failed(run_id, user_id, None, exc, code="REDRIVE_FAILED")
            if unavailable is not None:
                raise unavailable from exc
            raise
        if redriven:
            with self.db.transaction() as session:
                row = self._run(session, user_id, run_id, for_update=True)
                row.executions = [*(row.executions or []), {"execution": execution, "arn": arn, "mode": "redrive",
                                                            "started_at": utcnow().isoformat()}]
        else:
            with self.db.transaction() as session:  # committed first: consumers accept messages of n+1 only
                self._run(session, user_id, run_id, for_update=True).execution = execution + 1
            self._launch(run_id, version_id, execution + 1, "start", user_id=user_id)
        return self.get(user_id, run_id)


def _cancel_steps(session: Session, run_id: uuid.UUID, statuses: tuple[str, ...], now: datetime) -> None:
    session.execute(update(RunStep).where(RunStep.run_id == run_id, RunStep.status.in_(statuses))
                    .values(status="cancelled", finished_at=now, updated_at=now,
                            error={"code": "RUN_CANCELLED", "message": "the run was cancelled"})
                    .execution_options(synchronize_session=False))


def _back_to_running(session: Session, run_id: uuid.UUID) -> None:
    """A decided run waits no more, unless another approval step still does."""
    still_waiting = select(RunStep.step_id).where(RunStep.run_id == run_id, RunStep.status == "waiting_approval")
    session.execute(update(WorkflowRun)
                    .where(WorkflowRun.id == run_id, WorkflowRun.status == "waiting_approval", ~still_waiting.exists())
                    .values(status="running", updated_at=utcnow()).execution_options(synchronize_session=False))

