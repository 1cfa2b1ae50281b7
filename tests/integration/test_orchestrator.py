"""The orchestrator end to end on the workflow machinery: a plan becomes a workflow run (embedded moto, Step
Functions execution on, the real consumers in-process); the task completes when the run ends, with every
step's output, fails fast naming the failed step, and cancels in both directions."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from chalicelib.db.models import Task, TaskResult
from chalicelib.db.workflow_models import Workflow, WorkflowRun
from tests.integration.conftest import Api
from tests.integration.orchestrator_support import (
    BAD_SCHEMA,
    CODE,
    OK_SCHEMA,
    children,
    finish,
    get,
    harness,
    plan_run,
    start,
    wf_api,
    wf_aws,
    wf_container,
)
from tests.integration.test_api_auth import assert_envelope
from tests.integration.workflow_support import WorkflowHarness
from tests.llm_server import LLMServer, completion, openai_config

__all__ = ["harness", "wf_api", "wf_aws", "wf_container"]


def external(api: Api, agent_type: str, name: str) -> dict[str, Any]:
    """An external agent: its step tasks wait `queued` for a worker's lease, so a test can act while they wait."""
    r = api.call("POST", "/agents", {"name": name, "type": agent_type, "mode": "external"})
    assert r.status_code == 201, r.json_body
    return dict(r.json_body)


def test_a_plan_with_a_dependency_runs_as_a_workflow_and_completes_with_every_output(
        wf_api: Api, harness: WorkflowHarness) -> None:
    # GIVEN a validator, an examiner and an orchestrator
    api, db = wf_api, harness.db
    api.signup()
    validator = api.agent("validation", name="validator")
    examiner = api.agent("examination", name="examiner")
    boss = api.agent("orchestrator", name="boss")
    plan = [{"step_id": "check", "agent_type": "validation", "input_data": OK_SCHEMA},
            {"step_id": "lint", "agent_id": examiner["id"], "input_data": CODE},
            {"step_id": "re.check", "agent_id": validator["id"], "input_data": OK_SCHEMA,
             "depends_on": ["check", "lint"]}]
    parent = start(api, boss, {"goal": "ship the order service", "plan": plan})

    # WHEN the plan runs to its end
    done = finish(harness, api, parent["id"])

    # THEN the task completed with every step's output, in plan order
    assert done["status"] == "completed", done
    result = done["result"]["output_data"]
    assert result["goal"] == "ship the order service"
    assert [(s["step_id"], s["status"], s["agent_type"]) for s in result["steps"]] == [
        ("check", "completed", "validation"), ("lint", "completed", "examination"),
        ("re.check", "completed", "validation")]
    assert result["steps"][0]["output"]["valid"] is True
    assert [f["name"] for f in result["steps"][1]["output"]["functions"]] == ["total"]
    assert result["steps"][2]["agent_id"] == validator["id"]
    assert done["result"]["metrics"]["subtasks"] == 3
    # ... its steps were tasks of one run and subtasks of the orchestrator task
    run = plan_run(db, parent["id"])
    assert run is not None and run.status == "succeeded" and result["run_id"] == str(run.id)
    steps = children(db, parent["id"])
    assert set(steps) == {"check", "lint", "re_check"} and {t.run_id for t in steps.values()} == {run.id}
    assert get(api, str(steps["check"].id))["parent_task_id"] == parent["id"]
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(TaskResult)
                              .where(TaskResult.task_id == uuid.UUID(parent["id"]))) == 1
        assert session.scalar(select(Workflow.kind).where(Workflow.id == run.workflow_id)) == "plan"
    # ... the run is the owner's to watch, but the plan is not one of their workflows
    timeline = api.call("GET", f"/runs/{run.id}").json_body
    assert timeline["status"] == "succeeded", timeline
    assert api.call("GET", "/workflows").json_body["items"] == []
    assert_envelope(api.call("POST", f"/runs/{run.id}/redrive"), 409, "RUN_NOT_REDRIVABLE")


def test_a_failed_step_fails_the_task_and_cancels_the_rest(wf_api: Api, harness: WorkflowHarness) -> None:
    api, db = wf_api, harness.db
    api.signup()
    api.agent("validation", name="validator")
    slow = external(api, "examination", "worker")
    boss = api.agent("orchestrator", name="boss")
    plan = [{"step_id": "broken", "agent_type": "validation", "input_data": BAD_SCHEMA},
            {"step_id": "sibling", "agent_id": slow["id"], "input_data": CODE},
            {"step_id": "after", "agent_type": "validation", "input_data": OK_SCHEMA, "depends_on": ["broken"]}]
    parent = start(api, boss, {"goal": "g", "plan": plan})
    # The sibling's task exists (waiting for its worker) before the broken step runs.
    harness.paused = {"validation"}
    harness.drive(lambda: "sibling" in children(db, parent["id"]))
    harness.paused = set()

    failed = finish(harness, api, parent["id"])
    assert failed["status"] == "failed"
    error = failed["error"]
    steps = children(db, parent["id"])
    assert error["code"] == "SUBTASK_FAILED" and error["message"] == "step 'broken' failed"
    assert error["details"]["step_id"] == "broken" and error["details"]["task_id"] == str(steps["broken"].id)
    assert error["details"]["error"]["code"] == "AGENT_INPUT_INVALID"
    sibling = get(api, str(steps["sibling"].id))
    assert sibling["status"] == "cancelled"
    outcome = {s["step_id"]: s["status"] for s in failed["result"]["output_data"]["steps"]}
    assert outcome == {"broken": "failed", "sibling": "cancelled", "after": "not_started"}
    assert set(steps) == {"broken", "sibling"}
    run = plan_run(db, parent["id"])
    assert run is not None and run.status == "failed"


def test_cancelling_a_step_fails_the_task_and_cancelling_the_task_cancels_its_run(
        wf_api: Api, harness: WorkflowHarness) -> None:
    api, db = wf_api, harness.db
    api.signup()
    worker = external(api, "validation", "worker")
    boss = api.agent("orchestrator", name="boss")
    plan = [{"step_id": "a", "agent_id": worker["id"], "input_data": OK_SCHEMA},
            {"step_id": "b", "agent_id": worker["id"], "input_data": OK_SCHEMA}]
    one = start(api, boss, {"goal": "g", "plan": plan})
    two = start(api, boss, {"goal": "g", "plan": plan})
    harness.drive(lambda: len(children(db, one["id"])) == 2 and len(children(db, two["id"])) == 2)

    a1 = children(db, one["id"])["a"]
    assert api.call("POST", f"/tasks/{a1.id}/cancel").status_code == 200
    parent = finish(harness, api, one["id"])
    assert parent["status"] == "failed" and parent["error"]["code"] == "SUBTASK_FAILED"
    assert parent["error"]["details"]["status"] == "cancelled"
    assert get(api, str(children(db, one["id"])["b"].id))["status"] == "cancelled"

    assert api.call("POST", f"/tasks/{two['id']}/cancel").json_body["status"] == "cancelled"
    assert {t.status for t in children(db, two["id"]).values()} == {"cancelled"}
    run = plan_run(db, two["id"])
    assert run is not None and run.status == "cancelled"
    assert {s.status for s in harness.steps(run.id).values()} == {"cancelled"}
    for _ in range(5):  # the execution ends on the cancelled tokens' answers; nothing moves the task again
        harness.pump_once()
    assert get(api, two["id"])["status"] == "cancelled" and plan_run(db, two["id"]).status == "cancelled"


def test_cancelling_the_run_fails_its_task(wf_api: Api, harness: WorkflowHarness) -> None:
    api, db = wf_api, harness.db
    api.signup()
    worker = external(api, "validation", "worker")
    boss = api.agent("orchestrator", name="boss")
    parent = start(api, boss, {"goal": "g", "plan": [{"step_id": "a", "agent_id": worker["id"],
                                                      "input_data": OK_SCHEMA}]})
    harness.drive(lambda: "a" in children(db, parent["id"]))
    run = plan_run(db, parent["id"])
    assert run is not None
    assert api.call("POST", f"/runs/{run.id}/cancel").status_code == 200
    failed = get(api, parent["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "RUN_CANCELLED", failed["error"]
    assert get(api, str(children(db, parent["id"])["a"].id))["status"] == "cancelled"


def test_a_plan_that_cannot_run_fails_whole_without_a_run(wf_api: Api, harness: WorkflowHarness) -> None:
    api, db = wf_api, harness.db
    api.signup()
    boss = api.agent("orchestrator", name="boss")
    validator = api.agent("validation")
    plan = [{"step_id": "ok", "agent_id": validator["id"], "input_data": OK_SCHEMA},
            {"step_id": "nobody", "agent_type": "examination", "input_data": CODE}]
    parent = start(api, boss, {"goal": "g", "plan": plan})
    failed = finish(harness, api, parent["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "STEP_AGENT_UNAVAILABLE"
    assert failed["error"]["details"] == {"step_id": "nobody", "agent_type": "examination", "agents": 0,
                                          "active": 0, "at_capacity": 0}
    assert children(db, parent["id"]) == {} and plan_run(db, parent["id"]) is None
    # A step naming an agent by id gets its input checked when the plan runs.
    wrong = start(api, boss, {"goal": "g", "plan": [{"step_id": "x", "agent_id": validator["id"],
                                                     "input_data": {"source": "print(1)"}}]})
    error = finish(harness, api, wrong["id"])["error"]
    assert error["code"] == "STEP_INPUT_INVALID" and error["details"]["step_id"] == "x"


def test_a_step_on_another_users_agent_fails_the_task(wf_api: Api, harness: WorkflowHarness) -> None:
    api, db = wf_api, harness.db
    api.signup()
    theirs = api.agent("validation", name="theirs")
    api.signup()
    api.agent("validation", name="mine")
    boss = api.agent("orchestrator", name="boss")
    parent = start(api, boss, {"goal": "g", "plan": [{"step_id": "x", "agent_id": theirs["id"],
                                                      "input_data": OK_SCHEMA}]})
    failed = finish(harness, api, parent["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "STEP_AGENT_UNAVAILABLE"
    assert failed["error"]["details"] == {"step_id": "x", "agent_id": theirs["id"]}
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(Task)
                              .where(Task.agent_id == uuid.UUID(theirs["id"]))) == 0
        assert session.scalar(select(func.count()).select_from(WorkflowRun)) == 0


def test_bad_plans_are_422_and_no_plan_without_a_provider_says_what_to_set(wf_api: Api,
                                                                           harness: WorkflowHarness) -> None:
    api = wf_api
    api.signup()
    boss = api.agent("orchestrator", name="boss")
    r = api.call("POST", "/tasks", {"agent_id": boss["id"], "title": "t", "input_data": {
        "goal": "g", "plan": [{"step_id": "a", "agent_type": "validation", "input_data": OK_SCHEMA,
                               "depends_on": ["b"]}]}})
    error = assert_envelope(r, 422, "VALIDATION_ERROR")
    assert "depends on unknown steps: b" in error["details"]["errors"][0]["msg"]
    parent = start(api, boss, {"goal": "sort out the release"})
    failed = finish(harness, api, parent["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "PROVIDER_NOT_CONFIGURED"
    assert "input_data.plan" in failed["error"]["message"] and "config.endpoint" in failed["error"]["message"]


@pytest.fixture
def llm(monkeypatch: pytest.MonkeyPatch) -> Iterator[LLMServer]:
    monkeypatch.setenv("YMERA_LLM_KEY_TEST", "sk-integration")
    with LLMServer() as server:
        yield server


def test_with_a_provider_the_orchestrator_drafts_the_plan(wf_api: Api, harness: WorkflowHarness,
                                                          llm: LLMServer) -> None:
    api = wf_api
    api.signup()
    api.agent("validation", name="validator")
    r = api.call("POST", "/agents", {"name": "planner", "type": "orchestrator", "config": openai_config(llm)})
    assert r.status_code == 201, r.json_body
    drafted = {"plan": [{"step_id": "validate", "agent_type": "validation", "title": "validate the order",
                         "input_data": {**OK_SCHEMA, "payload": {"id": "$.a-literal"}}}]}
    llm.script(completion("Here is the plan:\n```json\n" + json.dumps(drafted) + "\n```"))
    parent = start(api, r.json_body, {"goal": "check the order payload"})
    done = finish(harness, api, parent["id"])
    system = llm.requests[0]["body"]["messages"][0]
    assert system["role"] == "system" and "- validation:" in system["content"]
    assert done["input_data"]["plan"][0]["step_id"] == "validate"  # stored for the outcome
    assert done["status"] == "completed", done
    assert done["result"]["output_data"]["steps"][0]["output"]["valid"] is True
    step_task = done["result"]["output_data"]["steps"][0]["task_id"]
    assert get(api, step_task)["input_data"]["payload"] == {"id": "$.a-literal"}  # a plan's strings are literals
    # A plan the model gets wrong fails clearly.
    llm.script(completion('{"plan": [{"step_id": "x", "agent_type": "validation", "input_data": {}}]}'))
    bad = start(api, r.json_body, {"goal": "again"})
    assert finish(harness, api, bad["id"])["error"]["code"] == "PLAN_INVALID"


def test_the_reconciler_finishing_a_plan_run_finishes_its_task(wf_api: Api, harness: WorkflowHarness) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from chalicelib.db.types import utcnow
    from chalicelib.workflows.reconcile import Reconciler

    api, db = wf_api, harness.db
    api.signup()
    api.agent("validation", name="validator")
    boss = api.agent("orchestrator", name="boss")
    parent = start(api, boss, {"goal": "g", "plan": [{"step_id": "a", "agent_type": "validation",
                                                      "input_data": OK_SCHEMA}]})
    harness.paused.add("workflow-control")  # the execution's workflow.finished report is never read
    harness.drive(lambda: (run := plan_run(db, parent["id"])) is not None and run.execution_arn is not None
                  and harness.execution_status(run.id) == "SUCCEEDED")
    run = plan_run(db, parent["id"])
    assert run is not None and run.status == "running" and get(api, parent["id"])["status"] == "processing"
    harness.sqs.purge_queue(QueueUrl=harness._queue_url("workflow-control"))  # the report is lost
    with db.transaction() as s:
        s.execute(update(WorkflowRun).where(WorkflowRun.id == run.id)
                  .values(updated_at=utcnow() - timedelta(minutes=5)))
    reconciler = Reconciler(db, lambda: harness.c.workflow_reconciler.executions(), after_seconds=60)
    assert reconciler.sweep().repaired == {"succeeded": 1}
    done = get(api, parent["id"])
    assert done["status"] == "completed" and done["result"]["output_data"]["steps"][0]["status"] == "completed"


def test_a_run_that_cannot_start_is_retried_and_then_fails_the_task(api: Api, container: Any) -> None:
    """Without the workflow role (a stage whose workflows are not set up) the run cannot start: the task is
    retried like any dependency outage, fails with DEPENDENCY_UNAVAILABLE on its last attempt, and its
    rerun reused the one run instead of making another."""
    from chalicelib.schemas.tasks import TaskMessage
    from chalicelib.services.processing import TaskProcessor

    api.signup()
    api.agent("validation", name="validator")
    boss = api.agent("orchestrator", name="boss")
    parent = start(api, boss, {"goal": "g", "plan": [{"step_id": "a", "agent_type": "validation",
                                                      "input_data": OK_SCHEMA}]})
    processor = TaskProcessor(container.db, max_attempts=2, ports=container.processor.ports)
    message = TaskMessage(task_id=uuid.UUID(parent["id"]), agent_type="orchestrator")
    with pytest.raises(Exception, match="DEPENDENCY_UNAVAILABLE"):
        processor.process(message)  # attempt 1 of 2: given back for a retry
    assert get(api, parent["id"])["status"] == "queued"
    processor.process(message)
    failed = get(api, parent["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "DEPENDENCY_UNAVAILABLE", failed
    with container.db.read() as session:
        runs = list(session.scalars(select(WorkflowRun).where(WorkflowRun.parent_task_id == uuid.UUID(parent["id"]))))
        assert [(r.status, r.error["code"], r.execution) for r in runs] == [("failed", "START_FAILED", 1)]


def test_the_advertised_example_plan_runs_to_completion(wf_api: Api, harness: WorkflowHarness) -> None:
    """GET /agent-types' orchestrator example, sent as it is, completes (its steps' agent types exist)."""
    from chalicelib.agents import registry

    api = wf_api
    api.signup()
    example = registry.get_agent("orchestrator").example_input
    for agent_type in sorted({s["agent_type"] for s in example["plan"]}):
        api.agent(agent_type, name=f"example-{agent_type}")
    boss = api.agent("orchestrator", name="example-orchestrator")
    advertised = next(i for i in api.call("GET", "/agent-types").json_body["items"] if i["type"] == "orchestrator")
    assert advertised["example_input"] == example
    done = finish(harness, api, start(api, boss, example)["id"])
    assert done["status"] == "completed", done.get("error")
    assert [s["status"] for s in done["result"]["output_data"]["steps"]] == ["completed"] * len(example["plan"])
