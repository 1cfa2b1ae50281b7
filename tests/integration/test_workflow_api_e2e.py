"""The API's services with the real runtime: a workflow created and started through WorkflowService/RunService
runs on moto's Step Functions (execution on) through the real consumers; an approval decided through
RunService.decide lets it finish; a rejection fails it and a redrive re-runs only what failed."""

from __future__ import annotations

import uuid

from chalicelib.schemas.workflows import DecisionRequest, RunStart
from chalicelib.services.meta import RequestMeta
from tests.integration import workflow_support
from tests.integration.workflow_support import WorkflowHarness, make_agent, make_user

# The runtime's fixtures (moto with execution on and the workflow role, a container, the consumer pump).
wf_aws, wf_container, harness = workflow_support.wf_aws, workflow_support.wf_container, workflow_support.harness

META = RequestMeta()
CHECK = {"schema": {"type": "object", "required": ["doc"]}, "payload": "$.input"}
DEFINITION = {"name": "review", "input_schema": {"type": "object", "required": ["doc"]}, "steps": [
    {"step_id": "check", "agent_type": "validation", "input_data": CHECK},
    {"step_id": "gate", "type": "approval", "depends_on": ["check"], "timeout_seconds": 600},
    {"step_id": "final", "agent_type": "validation", "depends_on": ["gate"], "input_data": CHECK}]}


def started(harness: WorkflowHarness) -> tuple[uuid.UUID, uuid.UUID]:
    user = make_user(harness.db)
    make_agent(harness.db, user)
    wf = harness.c.workflows.create(user, DEFINITION, META)
    result = harness.c.runs.start(user, wf.id, RunStart(input={"doc": "hello"}), META)
    assert result.status_code == 202 and result.run_id is not None
    return user, result.run_id


def step_status(harness: WorkflowHarness, run_id: uuid.UUID, step_id: str) -> str:
    return str(harness.steps(run_id)[step_id].status)


def test_started_through_the_api_approved_and_finished(harness: WorkflowHarness) -> None:
    user, run_id = started(harness)
    harness.drive(lambda: step_status(harness, run_id, "gate") == "waiting_approval")
    assert harness.c.runs.get(user, run_id).status == "waiting_approval"
    decided = harness.c.runs.decide(user, False, run_id, "gate", DecisionRequest(approve=True, comment="ok"), META)
    assert decided.steps[1].approval is not None and decided.steps[1].approval.decision == "approved"
    harness.drive(lambda: harness.status(run_id) == "succeeded")
    run = harness.c.runs.get(user, run_id)
    assert [(s.step_id, s.status) for s in run.steps] == [("check", "succeeded"), ("gate", "succeeded"),
                                                          ("final", "succeeded")]
    assert run.steps[0].task_id is not None and run.steps[0].output is not None
    assert harness.task_counts(run_id) == {"check": 1, "final": 1}


def test_rejected_then_redriven_reruns_only_the_gate_onwards(harness: WorkflowHarness) -> None:
    user, run_id = started(harness)
    harness.drive(lambda: step_status(harness, run_id, "gate") == "waiting_approval")
    harness.c.runs.decide(user, False, run_id, "gate", DecisionRequest(approve=False, comment="no"), META)
    harness.drive(lambda: harness.status(run_id) == "failed")
    failed = harness.c.runs.get(user, run_id)
    assert failed.steps[1].status == "failed" and failed.steps[1].error is not None
    assert failed.steps[1].error["code"] == "APPROVAL_REJECTED"

    redriven = harness.c.runs.redrive(user, run_id, META)
    assert redriven.status == "running" and redriven.execution == 2  # moto has no RedriveExecution
    harness.drive(lambda: step_status(harness, run_id, "gate") == "waiting_approval")
    harness.c.runs.decide(user, False, run_id, "gate", DecisionRequest(approve=True), META)
    harness.drive(lambda: harness.status(run_id) == "succeeded")
    assert harness.task_counts(run_id) == {"check": 1, "final": 1}  # check was short-circuited, not re-run
    assert [e.execution for e in harness.c.runs.get(user, run_id).executions] == [1, 2]


def test_cancel_through_the_api_stops_a_waiting_run(harness: WorkflowHarness) -> None:
    user, run_id = started(harness)
    harness.drive(lambda: step_status(harness, run_id, "gate") == "waiting_approval")
    cancelled = harness.c.runs.cancel(user, run_id, META)
    assert cancelled.status == "cancelled"
    assert {s.step_id: s.status for s in cancelled.steps} == {"check": "succeeded", "gate": "cancelled",
                                                             "final": "cancelled"}
    harness.pump_once()  # the gate's token was failed: the execution ends, the run stays cancelled
    assert harness.status(run_id) == "cancelled"
