"""The workflow control queue (`<prefix>-workflow-control`): approvals, for_each fan-outs, engine steps and
run reports, handled against Postgres (functions/workflow_control.py is the Lambda entry point).

Every token answer is an outbox row written in the transaction that decided it, and published right after
the commit (`publish`); the scheduled relay is the safety net, so an answer survives a crash after commit.
An engine runs with no transaction open (between the transaction that starts the step and the one that
records its output); a redelivery after a crash may run it again, which the Engine contract allows.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from chalicelib.db.models import Task
from chalicelib.db.types import utcnow
from chalicelib.db.workflow_models import RunStep, WorkflowRun
from chalicelib.domain.tasks import CANCELLABLE, TaskStatus
from chalicelib.engines import EngineContext
from chalicelib.engines import registry as engines
from chalicelib.errors import AppError, MalformedMessageError
from chalicelib.observability import logger
from chalicelib.workflows import messages as m
from chalicelib.workflows import runstate as rs
from chalicelib.workflows import scope as refs
from chalicelib.workflows.steps import finish

if TYPE_CHECKING:
    from chalicelib.config import Settings
    from chalicelib.db.session import Database

#: a run's error code for the error name its execution failed with (the Catch's `Error`).
RUN_ERROR_CODES = {m.ERROR_STEP_FAILED: "STEP_FAILED", m.ERROR_TOLERANCE_EXCEEDED: "TOLERANCE_EXCEEDED",
                   m.ERROR_APPROVAL_REJECTED: "APPROVAL_REJECTED", m.ERROR_RUN_CANCELLED: "RUN_CANCELLED",
                   "States.Timeout": "STEP_TIMED_OUT", "States.HeartbeatTimeout": "STEP_HEARTBEAT_TIMED_OUT",
                   m.ERROR_START_LOST: "START_LOST"}
TIMEOUTS = ("States.Timeout", "States.HeartbeatTimeout")


def parse(body: str) -> m.TokenMessage | m.RunReport:
    try:
        if '"workflow.finished"' in body or '"workflow.failed"' in body:
            return m.RunReport.model_validate_json(body)
        msg = m.TokenMessage.model_validate_json(body)
    except PydanticValidationError as exc:
        raise MalformedMessageError("message body is not a workflow control message",
                                    {"reason": str(exc)[:500]}) from exc
    if msg.kind == m.STEP:
        raise MalformedMessageError("workflow.step messages belong on agent queues", {"kind": msg.kind})
    return msg


class WorkflowControl:
    def __init__(self, db: Database, settings: Settings, publish: Callable[[list[uuid.UUID]], None]) -> None:
        self.db, self.settings, self.publish = db, settings, publish

    def handle(self, body: str) -> str:
        """One control message; returns what happened (for the log). Raises only to have SQS retry it."""
        msg = parse(body)
        if isinstance(msg, m.RunReport):
            return self._transact(lambda s: self.report(s, msg))
        if msg.kind == m.ENGINE:
            return self.engine(msg)
        handler = self.approval if msg.kind == m.APPROVAL else self.foreach
        return self._transact(lambda s: handler(s, msg))

    def _transact(self, work: Callable[[Session], str]) -> str:
        with self.db.transaction() as session:
            outcome = work(session)
        self.publish(rs.committed_answers(session))
        return outcome

    def _load(self, session: Session, msg: m.TokenMessage) -> rs.StepContext:
        # rs.load locks the run row first: a cancel or decision committing now is ordered against this.
        ctx = rs.load(session, msg.run_id, msg.step_id)
        if ctx is None:
            raise MalformedMessageError("the control message names no step of a run",
                                        {"run_id": str(msg.run_id), "step_id": msg.step_id})
        return ctx

    # -- approvals ------------------------------------------------------------------------------

    def approval(self, session: Session, msg: m.TokenMessage) -> str:
        ctx = self._load(session, msg)
        try:
            if rs.short_circuit(session, ctx, msg):
                return "answered"
        except rs.StepFailure as failure:
            finish(session, ctx, msg.token, aggregate_id=msg.run_id, item_index=None, succeeded=False,
                   task_id=None, error=failure.as_error())
            return "failed"
        now, row = utcnow(), ctx.row
        # The API's decision answers this token (SendTaskSuccess / SendTaskFailure Ymera.ApprovalRejected).
        row.approval_token, row.status, row.error, row.finished_at = msg.token, "waiting_approval", None, None
        row.decision, row.decided_by, row.decided_at = None, None, None
        row.started_at, row.attempts = row.started_at or now, row.attempts + 1
        if ctx.run.status == "running":
            ctx.run.status = "waiting_approval"
        ctx.run.updated_at = now
        return "waiting_approval"

    # -- for_each ---------------------------------------------------------------------------------

    def foreach(self, session: Session, msg: m.TokenMessage) -> str:
        ctx = self._load(session, msg)
        run, row, step = ctx.run, ctx.row, ctx.step
        where: dict[str, Any] = {"run_id": run.id, "step_id": step.step_id}

        def indexes(ix: list[int]) -> None:
            rs.answer(session, msg.token, output=m.ForEachAnswer(step_id=step.step_id, indexes=ix).model_dump(),
                      **where)

        if run.status in rs.RUN_TERMINAL or msg.execution < run.execution:
            rs.answer(session, msg.token, error=m.ERROR_RUN_CANCELLED, cause=f"the run is {run.status}", **where)
            return "answered"
        if row.status == "skipped":
            indexes([])
            return "skipped"
        if row.items is not None and row.items_total is not None:
            # Already resolved (a redrive, a redelivery): the same items, so results keep their indexes and
            # finished items short-circuit inside the Map.
            if row.status in ("pending", "failed", "cancelled"):
                # A redrive: succeeded items keep their results (and short-circuit); the others run again.
                kept = {k: v for k, v in ((row.output or {}).get("results") or {}).items()
                        if v.get("status") == "succeeded"}
                row.output, row.items_failed = {"results": kept}, 0
                row.status, row.error, row.finished_at, row.attempts = "running", None, None, row.attempts + 1
            indexes(list(range(row.items_total)))
            return "resolved"
        try:
            data = rs.scope(session, ctx)
            reason = rs.skipped_reason(session, ctx, data)
            if reason is not None:
                rs.mark_skipped(row, reason)
                indexes([])
                return "skipped"
            assert step.for_each is not None
            items = refs.lookup(step.for_each, data)
            if not isinstance(items, list):
                raise rs.StepFailure("FOREACH_NOT_AN_ARRAY", f"step {step.step_id!r}: for_each {step.for_each!r} "
                                     f"is a {type(items).__name__}, not an array", {"step_id": step.step_id})
            limit = self.settings.workflow_foreach_max_items
            if len(items) > limit:
                raise rs.StepFailure("FOREACH_TOO_LARGE", f"step {step.step_id!r}: {len(items)} items; "
                                     f"the limit is {limit}", {"step_id": step.step_id, "items": len(items),
                                                               "max_items": limit})
        except refs.ReferenceUnresolved as exc:
            failure = rs.StepFailure("REFERENCE_UNRESOLVED", f"step {step.step_id!r}: {exc}",
                                     {"step_id": step.step_id, "reference": exc.reference})
            return self._fail_step(session, ctx, msg, failure)
        except rs.StepFailure as failure:
            return self._fail_step(session, ctx, msg, failure)
        now = utcnow()
        row.items, row.items_total, row.items_failed = items, len(items), 0
        row.status, row.error, row.finished_at = ("running", None, None) if items else ("succeeded", None, now)
        row.output = {"results": {}, **({} if items else {"items_total": 0, "items_failed": 0})}
        row.started_at, row.attempts = row.started_at or now, row.attempts + 1
        indexes(list(range(len(items))))
        return "fanned_out"

    def _fail_step(self, session: Session, ctx: rs.StepContext, msg: m.TokenMessage, failure: rs.StepFailure) -> str:
        finish(session, ctx, msg.token, aggregate_id=msg.run_id, item_index=None, succeeded=False, task_id=None,
               error=failure.as_error())
        return "failed"

    # -- engine steps ------------------------------------------------------------------------------

    def engine(self, msg: m.TokenMessage) -> str:
        with self.db.transaction() as session:
            ctx = self._load(session, msg)
            try:
                if rs.short_circuit(session, ctx, msg):
                    answered = "answered"
                else:
                    answered = ""
                    data = rs.scope(session, ctx, msg.item_index)
                    engine = engines.get(ctx.step.engine or "")
                    payload = engines.validate_input(engine, rs.resolve_input(ctx, data))
                    if msg.item_index is None:
                        rs.start(ctx.row)
                    elif ctx.row.status == "pending":
                        ctx.row.status = "running"
                    user_id, attempt = ctx.run.user_id, msg.retry_count + 1
            except (rs.StepFailure, AppError) as exc:
                failure = exc if isinstance(exc, rs.StepFailure) else rs.StepFailure(exc.code, exc.message, exc.details)
                finish(session, ctx, msg.token, aggregate_id=msg.run_id, item_index=msg.item_index, succeeded=False,
                       task_id=None, error=failure.as_error())
                answered = "failed"
        self.publish(rs.committed_answers(session))
        if answered:
            return answered
        ectx = EngineContext(user_id=user_id, transaction=self.db.transaction, settings=self.settings,
                             run_id=msg.run_id, step_id=msg.step_id)
        output: dict[str, Any] | None = None
        error: dict[str, Any] | None = None
        try:
            output = engine.run(ectx, payload)  # no transaction open while it computes
        except AppError as exc:
            error = {"code": exc.code, "message": exc.message, "details": exc.details}
        except Exception as exc:  # noqa: BLE001 - an engine's crash is the step's failure, reported to the run
            logger.exception("engine step crashed", extra={"run_id": str(msg.run_id), "step_id": msg.step_id})
            error = {"code": "ENGINE_FAILED", "message": f"the engine failed: {type(exc).__name__}", "details": {}}
        with self.db.transaction() as session:
            ctx = self._load(session, msg)
            if error is None:
                finish(session, ctx, msg.token, aggregate_id=msg.run_id, item_index=msg.item_index, succeeded=True,
                       task_id=None, output=rs.storable_output(output))
            else:
                finish(session, ctx, msg.token, aggregate_id=msg.run_id, item_index=msg.item_index,
                       succeeded=False, task_id=None, error=error, last=attempt >= ctx.step.max_attempts)
        self.publish(rs.committed_answers(session))
        return "succeeded" if error is None else "failed"

    # -- run reports --------------------------------------------------------------------------------

    def report(self, session: Session, msg: m.RunReport) -> str:
        run = session.scalars(select(WorkflowRun).where(WorkflowRun.id == msg.run_id).with_for_update()).first()
        if run is None:
            raise MalformedMessageError("the run report names no run", {"run_id": str(msg.run_id)})
        if msg.execution < run.execution or run.status in rs.RUN_TERMINAL:
            return f"ignored ({run.status})"
        if msg.kind == m.FINISHED:
            finish_run(session, run, "succeeded")
        else:
            fail_run(session, run, "failed", msg.error or {})
        return run.status


def sinks(definition: Any) -> list[str]:
    needed = {d for s in definition.steps for d in s.depends_on}
    return [s.step_id for s in definition.steps if s.step_id not in needed]


def finish_run(session: Session, run: WorkflowRun, status: str) -> None:
    """The run succeeded: its output is its sink steps' outputs (large ones by reference)."""
    from chalicelib.db.workflow_models import WorkflowVersion

    version = session.get(WorkflowVersion, run.version_id)
    assert version is not None
    ends = sinks(rs.definition_of(version))
    rows = {r.step_id: r for r in session.scalars(select(RunStep).where(RunStep.run_id == run.id,
                                                                         RunStep.step_id.in_(ends)))}
    now = utcnow()
    run.output = {"steps": {sid: rs.output_or_reference(rows[sid], rs.expand_output(session, rows[sid]))
                            for sid in ends if sid in rows}}
    run.status, run.error, run.finished_at, run.updated_at = status, None, now, now


def fail_run(session: Session, run: WorkflowRun, status: str, caught: dict[str, Any]) -> None:
    """The run ended unsuccessfully: steps still open are cancelled (a step past its deadline is failed
    STEP_TIMED_OUT; after a heartbeat timeout, the steps still running), their queued tasks cancelled, and the
    run records the error it ended with."""
    from chalicelib.db.workflow_models import WorkflowVersion

    now = utcnow()
    name, cause = str(caught.get("Error") or "WorkflowFailed"), str(caught.get("Cause") or "")
    version = session.get(WorkflowVersion, run.version_id)
    assert version is not None
    definition = rs.definition_of(version)
    open_rows = list(session.scalars(select(RunStep).where(RunStep.run_id == run.id,
                                                           RunStep.status.in_(("running", "waiting_approval")))))
    late: list[RunStep] = []
    if name in TIMEOUTS:
        # The step that timed out: one past its deadline, else (a heartbeat timeout) every step still running.
        late = [r for r in open_rows if (r.started_at or now) + timedelta(seconds=_timeout_of(definition, r.step_id))
                <= now + timedelta(seconds=1)] or [r for r in open_rows if r.status == "running"]
    for row in open_rows:
        if row in late:
            row.status, row.error = "failed", {"code": RUN_ERROR_CODES[name],
                                               "message": f"the step did not finish within its timeout ({name})"}
        else:
            row.status = "cancelled"
        row.finished_at = now
    timed_out = [r.step_id for r in late]
    failed = list(session.scalars(select(RunStep.step_id).where(RunStep.run_id == run.id,
                                                                RunStep.status == "failed")))
    cancel_open_tasks(session, run.id, {"code": "RUN_FAILED", "message": f"the workflow run {status}"})
    code = RUN_ERROR_CODES.get(name, "WORKFLOW_FAILED" if status == "failed" else "WORKFLOW_TIMED_OUT")
    run.error = {"code": code, "message": cause or f"the execution failed with {name}",
                 "details": {"error": name, "cause": cause, "failed_steps": failed, "timed_out_steps": timed_out}}
    run.status, run.finished_at, run.updated_at = status, now, now


def _timeout_of(definition: Any, step_id: str) -> int:
    try:
        return int(definition.step(step_id).timeout)
    except KeyError:
        return 0


def cancel_open_tasks(session: Session, run_id: uuid.UUID, error: dict[str, Any]) -> list[uuid.UUID]:
    """Tasks of the run not started yet are cancelled (a running one finishes; its answer is late)."""
    now = utcnow()
    return list(session.scalars(
        update(Task).where(Task.run_id == run_id, Task.status.in_([s for s in CANCELLABLE
                                                                   if s != TaskStatus.PROCESSING]))
        .values(status=TaskStatus.CANCELLED, completed_at=now, updated_at=now, error=error)
        .returning(Task.id).execution_options(synchronize_session=False)))
