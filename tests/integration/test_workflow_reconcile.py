"""The reconciler's repair rules, against rows and a fake execution reader (no execution needed)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from chalicelib.db.types import utcnow
from chalicelib.db.workflow_models import RunStep, WorkflowRun, WorkflowVersion
from chalicelib.workflows.ports import ExecutionState
from chalicelib.workflows.reconcile import Reconciler
from tests.integration.workflow_support import WorkflowHarness, harness, make_agent, make_user, wf_aws, wf_container

__all__ = ["harness", "wf_aws", "wf_container"]


class FakeReader:
    def __init__(self, states: dict[str, ExecutionState], history: list[dict[str, Any]] | None = None) -> None:
        self.states, self.events, self.asked = states, history or [], 0

    def describe_execution(self, execution_arn: str) -> ExecutionState:
        self.asked += 1
        return self.states[execution_arn]

    def history(self, execution_arn: str, max_events: int = 1000) -> list[dict[str, Any]]:
        return self.events


def _run(harness: WorkflowHarness, user: uuid.UUID, workflow: uuid.UUID, *, minutes_ago: int = 10,
         step_status: str = "running") -> tuple[uuid.UUID, str]:
    with harness.db.transaction() as s:
        version = s.scalar(select(WorkflowVersion).where(WorkflowVersion.workflow_id == workflow))
        assert version is not None
        run = WorkflowRun(user_id=user, workflow_id=workflow, version_id=version.id, status="running", input={},
                          execution_arn=f"arn:aws:states:us-east-1:1:execution:x:{uuid.uuid4().hex}",
                          updated_at=utcnow() - timedelta(minutes=minutes_ago))
        s.add(run)
        s.flush()
        s.add(RunStep(run_id=run.id, step_id="a", status=step_status, attempts=1, items_failed=0,
                      started_at=utcnow() - timedelta(minutes=minutes_ago)))
        return run.id, str(run.execution_arn)


@pytest.fixture
def owner(harness: WorkflowHarness) -> tuple[uuid.UUID, uuid.UUID]:
    user = make_user(harness.db)
    make_agent(harness.db, user)
    workflow = harness.create(user, {"steps": [
        {"step_id": "a", "agent_type": "validation", "input_data": {"schema": {}, "payload": 1}}]})
    return user, workflow


@pytest.mark.parametrize(("execution", "status", "code"), [
    (ExecutionState("FAILED", "Ymera.StepFailed", "AGENT_ERROR: boom"), "failed", "STEP_FAILED"),
    (ExecutionState("TIMED_OUT"), "timed_out", "WORKFLOW_TIMED_OUT"),
    (ExecutionState("ABORTED"), "cancelled", "RUN_CANCELLED"),
])
def test_an_ended_execution_repairs_its_run(harness: WorkflowHarness, owner: tuple[uuid.UUID, uuid.UUID],
                                            execution: ExecutionState, status: str, code: str) -> None:
    run_id, arn = _run(harness, *owner)
    reader = FakeReader({arn: execution})
    report = Reconciler(harness.db, lambda: reader, after_seconds=60).sweep()
    assert report.repaired == {status: 1}
    run, steps = harness.run(run_id), harness.steps(run_id)
    assert run.status == status and run.error is not None and run.error["code"] == code and run.finished_at
    assert steps["a"].status == "cancelled"  # nothing is left running under an ended run
    assert Reconciler(harness.db, lambda: reader, after_seconds=60).sweep().looked_at == 0  # idempotent


def test_a_failure_without_an_error_takes_it_from_the_history(harness: WorkflowHarness,
                                                              owner: tuple[uuid.UUID, uuid.UUID]) -> None:
    run_id, arn = _run(harness, *owner)
    reader = FakeReader({arn: ExecutionState("FAILED")}, [
        {"id": 9, "type": "ExecutionFailed", "executionFailedEventDetails": {"error": "Ymera.ToleranceExceeded",
                                                                             "cause": "3 of 5 items failed"}}])
    Reconciler(harness.db, lambda: reader, after_seconds=60).sweep()
    run = harness.run(run_id)
    assert run.status == "failed" and run.error is not None
    assert run.error["code"] == "TOLERANCE_EXCEEDED" and run.error["message"] == "3 of 5 items failed"


def test_a_still_running_execution_is_touched_and_recent_runs_are_not_asked(harness: WorkflowHarness,
                                                                           owner: tuple[uuid.UUID, uuid.UUID]) -> None:
    old, old_arn = _run(harness, *owner)
    recent, recent_arn = _run(harness, *owner, minutes_ago=0)
    reader = FakeReader({old_arn: ExecutionState("RUNNING"), recent_arn: ExecutionState("SUCCEEDED")})
    report = Reconciler(harness.db, lambda: reader, after_seconds=60).sweep()
    assert report.still_running == 1 and report.repaired == {} and reader.asked == 1
    assert harness.status(old) == "running" and harness.status(recent) == "running"
    # touched: the next sweep asks about others first instead of the same long run every minute
    assert Reconciler(harness.db, lambda: reader, after_seconds=60).sweep().looked_at == 0


def test_one_broken_run_does_not_stop_the_sweep(harness: WorkflowHarness, owner: tuple[uuid.UUID, uuid.UUID]) -> None:
    broken, _ = _run(harness, *owner, minutes_ago=20)
    fine, fine_arn = _run(harness, *owner)
    reader = FakeReader({fine_arn: ExecutionState("SUCCEEDED")})  # the broken one's ARN is unknown: KeyError
    report = Reconciler(harness.db, lambda: reader, after_seconds=60).sweep()
    assert report.errors == 1 and report.repaired == {"succeeded": 1}
    assert harness.status(broken) == "running" and harness.status(fine) == "succeeded"


def test_a_run_whose_execution_never_started_is_failed_so_it_can_be_redriven(
        harness: WorkflowHarness, owner: tuple[uuid.UUID, uuid.UUID]) -> None:
    # GIVEN a run committed by a process that died before StartExecution (no execution ARN), and a fresh one
    lost, _ = _run(harness, *owner)
    fresh, _ = _run(harness, *owner, minutes_ago=0)
    with harness.db.transaction() as s:
        for run_id in (lost, fresh):
            row = s.get(WorkflowRun, run_id)
            assert row is not None
            row.execution_arn = None
        s.get(WorkflowRun, lost).updated_at = utcnow() - timedelta(minutes=10)  # type: ignore[union-attr]
    reader = FakeReader({})
    # WHEN the reconciler sweeps
    report = Reconciler(harness.db, lambda: reader, after_seconds=60).sweep()
    # THEN the old one is failed START_LOST (redrivable), the one still starting is left alone, nothing is asked
    assert report.repaired == {"failed": 1} and reader.asked == 0
    run = harness.run(lost)
    assert run.status == "failed" and run.error is not None and run.error["code"] == "START_LOST"
    assert harness.status(fresh) == "running"
