"""The reconciler (functions/workflow_reconciler.py, every minute): runs whose execution ended while a
callback or a run report was lost are repaired from the execution itself.

It looks at runs still `running`/`waiting_approval` whose row has not moved for
`workflow_reconcile_after_seconds` (oldest first, a bounded batch), asks DescribeExecution with no
transaction open, then re-reads the run under a row lock and repairs it only if nothing moved meanwhile:
SUCCEEDED → succeeded, FAILED → failed (the error from the execution, or its history), TIMED_OUT →
timed_out, ABORTED → cancelled. A run whose execution still runs is touched, so the oldest-first batch
moves on to others instead of asking about the same long approvals every minute. Idempotent: a repaired
run is terminal, and a run report arriving later is ignored.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import select

from chalicelib.db.types import utcnow
from chalicelib.db.workflow_models import WorkflowRun
from chalicelib.observability import logger
from chalicelib.workflows import messages as m
from chalicelib.workflows.control import fail_run, finish_run
from chalicelib.workflows.ports import ExecutionState

if TYPE_CHECKING:
    from chalicelib.db.session import Database

OPEN = ("running", "waiting_approval")
#: execution history event types that carry the error an execution failed with.
FAILURE_EVENTS = {"ExecutionFailed": "executionFailedEventDetails", "TaskFailed": "taskFailedEventDetails",
                  "TaskTimedOut": "taskTimedOutEventDetails"}


class ExecutionReader(Protocol):
    """What the reconciler needs of chalicelib.workflows.ports.StateMachines (`history` newest first)."""

    def describe_execution(self, execution_arn: str) -> ExecutionState: ...

    def history(self, execution_arn: str, max_events: int = 1000) -> list[dict[str, Any]]: ...


@dataclass
class ReconcileReport:
    looked_at: int = 0
    repaired: dict[str, int] = field(default_factory=dict)
    still_running: int = 0
    errors: int = 0


class Reconciler:
    def __init__(self, db: Database, executions: Callable[[], ExecutionReader], *, after_seconds: int,
                 batch: int = 50, clock: Callable[[], datetime] = utcnow) -> None:
        self.db, self.executions = db, executions
        self.after = timedelta(seconds=after_seconds)
        self.batch, self.clock = batch, clock

    def sweep(self) -> ReconcileReport:
        report = ReconcileReport()
        cutoff = self.clock() - self.after
        with self.db.read() as session:
            candidates = session.execute(
                select(WorkflowRun.id, WorkflowRun.execution_arn, WorkflowRun.updated_at)
                .where(WorkflowRun.status.in_(OPEN), WorkflowRun.updated_at < cutoff,
                       WorkflowRun.execution_arn.is_not(None))
                .order_by(WorkflowRun.updated_at).limit(self.batch)).all()
        report.repaired.update(self._fail_lost_starts(cutoff))
        for run_id, arn, seen in candidates:
            report.looked_at += 1
            assert arn is not None  # selected so
            try:
                state = self.executions().describe_execution(arn)
                if state.status == "FAILED" and not state.error:
                    state = self._from_history(arn, state)
                outcome = self._repair(run_id, arn, seen, state)
            except Exception:  # noqa: BLE001 - one run's failure must not stop the sweep; it is retried next time
                logger.warning("workflow run could not be reconciled", extra={"run_id": str(run_id)}, exc_info=True)
                report.errors += 1
                continue
            if outcome == "running":
                report.still_running += 1
            elif outcome:
                report.repaired[outcome] = report.repaired.get(outcome, 0) + 1
        return report

    def _fail_lost_starts(self, cutoff: datetime) -> dict[str, int]:
        """Runs committed but never given an execution (the starting process died between its commit and
        StartExecution): failed START_LOST, so they can be redriven, instead of `running` forever. Orchestrator
        plans are left alone: the orchestrator task's retry launches its run again."""
        with self.db.transaction() as session:
            lost = list(session.scalars(
                select(WorkflowRun).where(WorkflowRun.status.in_(OPEN), WorkflowRun.execution_arn.is_(None),
                                          WorkflowRun.parent_task_id.is_(None), WorkflowRun.updated_at < cutoff)
                .order_by(WorkflowRun.updated_at).limit(self.batch).with_for_update(skip_locked=True)))
            for run in lost:
                fail_run(session, run, "failed", {"Error": m.ERROR_START_LOST,
                                                  "Cause": "the run's execution was never started; redrive starts it"})
                logger.warning("workflow run had no execution; failed so it can be redriven",
                               extra={"run_id": str(run.id)})
        return {"failed": len(lost)} if lost else {}

    def _from_history(self, arn: str, state: ExecutionState) -> ExecutionState:
        for event in self.executions().history(arn):  # newest first: the failure is among the last events
            key = FAILURE_EVENTS.get(str(event.get("type")))
            if key and event.get(key):
                details = event[key]
                return ExecutionState(state.status, details.get("error"), details.get("cause"))
        return state

    def _repair(self, run_id: uuid.UUID, arn: str, seen: datetime, state: ExecutionState) -> str | None:
        with self.db.transaction() as session:
            run = session.scalars(select(WorkflowRun).where(WorkflowRun.id == run_id).with_for_update()).first()
            if run is None or run.status not in OPEN or run.execution_arn != arn or run.updated_at != seen:
                return None  # it moved meanwhile (a report or callback arrived): nothing to repair
            if state.status == "RUNNING":
                run.updated_at = self.clock()
                return "running"
            caught = {"Error": state.error or state.status, "Cause": state.cause or ""}
            if state.status == "SUCCEEDED":
                finish_run(session, run, "succeeded")
            elif state.status == "TIMED_OUT":
                fail_run(session, run, "timed_out", {"Error": "Ymera.RunTimedOut",
                                                     "Cause": "the run did not finish within its timeout_seconds"})
            elif state.status == "ABORTED":
                fail_run(session, run, "cancelled", {"Error": m.ERROR_RUN_CANCELLED,
                                                     "Cause": "the execution was stopped"})
            else:
                fail_run(session, run, "failed", caught)
            logger.info("workflow run reconciled from its execution",
                        extra={"run_id": str(run_id), "execution_status": state.status, "status": run.status})
            return str(run.status)
