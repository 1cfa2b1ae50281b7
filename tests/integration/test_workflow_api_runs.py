"""Runs over the API: start on moto's Step Functions (execution on), Idempotency-Key, input_schema, Step
Functions down (503, the run failed and never left running), list pages and filters, the step timeline, and
ownership. Decisions, cancel and redrive are in test_workflow_api_control.py."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from sqlalchemy import func, select, update

from chalicelib.db.models import Agent, AuditLog, Task, User
from chalicelib.db.workflow_models import RunStep, WorkflowRun, WorkflowVersion
from chalicelib.messaging.states import SfnStateMachines, make_states_client
from tests.integration.conftest import PREFIX, Api
from tests.integration.test_api_auth import assert_envelope
from tests.integration.test_workflow_api import (  # noqa: F401 - fixtures
    aws,
    create_workflow,
    definition,
    settings,
    task_step,
)

START = {"input": {"doc": "hello"}}


class FakeMachines:
    """Records every call; `redrives` says whether RedriveExecution is supported."""

    def __init__(self, redrives: bool = False) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.redrives = redrives

    def ensure_state_machine(self, name: str, definition: dict[str, Any], role_arn: str) -> str:
        self.calls.append(("ensure", name, definition, role_arn))
        return f"arn:aws:states:us-east-1:123456789012:stateMachine:{name}"

    def start_execution(self, state_machine_arn: str, name: str, execution_input: dict[str, Any]) -> str:
        self.calls.append(("start", name, execution_input))
        return f"{state_machine_arn.replace(':stateMachine:', ':execution:')}:{name}"

    def stop_execution(self, execution_arn: str, error: str, cause: str) -> None:
        self.calls.append(("stop", execution_arn, error))

    def redrive_execution(self, execution_arn: str) -> bool:
        self.calls.append(("redrive", execution_arn))
        return self.redrives

    def describe_execution(self, execution_arn: str) -> Any:
        raise NotImplementedError

    def history(self, execution_arn: str, max_events: int = 1000) -> list[dict[str, Any]]:
        return []

    def named(self, kind: str) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == kind]


def start(api: Api, workflow_id: str, body: Any = START, **headers: str) -> Any:
    return api.call("POST", f"/workflows/{workflow_id}/runs", body, headers=headers or None)


def received(sqs: Any, queue: str, *, wait: float = 5.0) -> list[dict[str, Any]]:
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if got:
            return [json.loads(m["Body"]) for m in got]
        time.sleep(0.05)
    return []


def test_a_run_starts_its_execution_on_step_functions(api: Api, aws: Any, container: Any,  # noqa: F811
                                                      db: Any) -> None:
    api.signup()
    wf = create_workflow(api)
    r = start(api, wf["id"])
    assert r.status_code == 202, r.json_body
    run = r.json_body
    assert r.headers["Location"] == f"/runs/{run['id']}"
    assert run["status"] == "running" and run["version"] == 1 and run["input"] == START["input"]
    assert [s["step_id"] for s in run["steps"]] == ["check", "gate", "final"]
    assert all(s["status"] == "pending" for s in run["steps"])
    assert run["steps"][1]["approval"]["waiting"] is False and run["steps"][0]["approval"] is None
    (execution,) = run["executions"]
    assert execution["execution"] == 1 and execution["mode"] == "start"
    assert execution["arn"].endswith(f":{uuid.UUID(run['id']).hex}-1")
    # The execution is real: moto runs it, and its first token step put the step's message on the agent queue.
    assert container.state_machines.describe_execution(execution["arn"]).status == "RUNNING"
    (message,) = received(aws, f"{PREFIX}-agent-validation")
    assert message["kind"] == "workflow.step" and message["run_id"] == run["id"] and message["step_id"] == "check"
    assert message["execution"] == 1 and message["token"]
    with db.read() as session:
        version = session.scalar(select(WorkflowVersion))
        assert version is not None and version.state_machine_arn is not None
        assert version.state_machine_arn.endswith(f":{PREFIX}-wf-{version.id.hex}")
        assert session.scalar(select(func.count()).select_from(RunStep)) == 3
        assert "workflow_run.started" in set(session.scalars(select(AuditLog.event_type)))
    # A second run of the version reuses its state machine.
    assert start(api, wf["id"]).status_code == 202
    machines = container.state_machines.client.list_state_machines()["stateMachines"]
    assert [m["name"] for m in machines] == [f"{PREFIX}-wf-{version.id.hex}"]
    assert api.call("GET", f"/runs/{run['id']}").json_body["executions"] == run["executions"]


def test_idempotency_key_returns_the_same_run(api: Api, container: Any, db: Any) -> None:
    container.runs.launcher.state_machines = fake = FakeMachines()
    api.signup()
    wf = create_workflow(api)
    first = start(api, wf["id"], **{"Idempotency-Key": "run-once"})
    again = start(api, wf["id"], **{"Idempotency-Key": "run-once"})
    assert first.status_code == again.status_code == 202
    assert again.json_body["id"] == first.json_body["id"] and again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Location"] == first.headers["Location"]
    assert_envelope(start(api, wf["id"], {"input": {"doc": "other"}}, **{"Idempotency-Key": "run-once"}), 409,
                    "IDEMPOTENCY_KEY_REUSED")
    assert_envelope(start(api, wf["id"], **{"Idempotency-Key": "has space"}), 422, "VALIDATION_ERROR")
    assert len(fake.named("start")) == 1
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(WorkflowRun)) == 1


def test_input_is_checked_against_the_input_schema(api: Api, container: Any, db: Any) -> None:
    container.runs.launcher.state_machines = fake = FakeMachines()
    api.signup()
    wf = create_workflow(api)
    error = assert_envelope(start(api, wf["id"], {"input": {"doc": 5}}), 422, "RUN_INPUT_INVALID")
    assert error["details"]["errors"][0]["path"] == "/doc"
    assert_envelope(start(api, wf["id"], {}), 422, "RUN_INPUT_INVALID")  # `doc` is required
    assert_envelope(start(api, wf["id"], {"input": {"doc": "x"}, "extra": 1}), 422, "VALIDATION_ERROR")
    # A schema built to explode is refused within its bounds, not evaluated for minutes.
    bomb: dict[str, Any] = {"$defs": {"a0": {"type": "string"}}}
    for i in range(1, 25):  # 2**24 subschemas expanded, in a chain shorter than the $ref depth bound
        bomb["$defs"][f"a{i}"] = {"allOf": [{"$ref": f"#/$defs/a{i - 1}"}, {"$ref": f"#/$defs/a{i - 1}"}]}
    bomb["$ref"] = "#/$defs/a24"
    with db.transaction() as session:  # (written directly: whether create refuses it is the compiler's call)
        version = session.scalar(select(WorkflowVersion))
        assert version is not None
        version.definition = {**version.definition, "input_schema": bomb}
    error = assert_envelope(start(api, wf["id"]), 422, "RUN_INPUT_INVALID")
    assert "subschemas" in error["message"]  # refused by the static bound, before any validation work
    assert fake.calls == []
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(WorkflowRun)) == 0


def test_step_functions_down_is_503_and_the_run_is_failed(api: Api, container: Any, db: Any) -> None:
    container.runs.launcher.state_machines = SfnStateMachines(
        lambda: make_states_client("us-east-1", "http://127.0.0.1:9", 0.5))
    api.signup()
    wf = create_workflow(api)
    error = assert_envelope(start(api, wf["id"], **{"Idempotency-Key": "k1"}), 503, "DEPENDENCY_UNAVAILABLE")
    assert error["details"]["dependency"] == "stepfunctions"
    with db.read() as session:
        run = session.scalar(select(WorkflowRun))
        assert run is not None and run.status == "failed" and run.finished_at is not None
        assert run.error is not None and run.error["code"] == "START_FAILED" and run.execution_arn is None
    # The key was not spent on the failure: once Step Functions is back, the same retry starts a run.
    container.runs.launcher.state_machines = FakeMachines()
    again = start(api, wf["id"], **{"Idempotency-Key": "k1"})
    assert again.status_code == 202 and again.json_body["id"] != str(run.id)
    listed = api.call("GET", f"/workflows/{wf['id']}/runs?status=failed").json_body["items"]
    assert [r["id"] for r in listed] == [str(run.id)]


def test_list_runs_pages_and_filters(api: Api, container: Any, db: Any) -> None:
    container.runs.launcher.state_machines = FakeMachines()
    api.signup()
    wf = create_workflow(api)
    ids = [start(api, wf["id"]).json_body["id"] for _ in range(5)]
    with db.transaction() as session:
        session.execute(update(WorkflowRun).where(WorkflowRun.id == uuid.UUID(ids[1])).values(status="succeeded"))
    seen, cursor = [], None
    while True:
        page = api.call("GET", f"/workflows/{wf['id']}/runs?limit=2" + (f"&cursor={cursor}" if cursor else ""))
        assert page.status_code == 200, page.json_body
        seen += [r["id"] for r in page.json_body["items"]]
        cursor = page.json_body["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    succeeded = api.call("GET", f"/workflows/{wf['id']}/runs?status=succeeded").json_body["items"]
    assert [r["id"] for r in succeeded] == [ids[1]] and "steps" not in succeeded[0]
    after = api.call("GET", f"/workflows/{wf['id']}/runs?created_after=2999-01-01T00:00:00Z").json_body["items"]
    before = api.call("GET", f"/workflows/{wf['id']}/runs?created_before=2999-01-01T00:00:00Z").json_body["items"]
    assert after == [] and len(before) == 5
    assert_envelope(api.call("GET", f"/workflows/{wf['id']}/runs?created_after=2026-01-01T00:00:00"), 422,
                    "VALIDATION_ERROR")
    assert_envelope(api.call("GET", f"/workflows/{wf['id']}/runs?status=nope"), 422, "VALIDATION_ERROR")


def test_timeline_shows_for_each_items_and_large_outputs_by_reference(api: Api, container: Any, db: Any) -> None:
    container.runs.launcher.state_machines = FakeMachines()
    api.signup()
    agent = api.agent()
    fan = task_step("fan", "check", for_each="$.input.items", max_concurrency=2)
    fan["input_data"] = {"schema": {"type": "object"}, "payload": "$.item"}
    wf = create_workflow(api, definition(input_schema=None, steps=[task_step("check"), fan]))
    run = start(api, wf["id"], {"input": {"items": [1, 2, 3]}}).json_body
    run_id = uuid.UUID(run["id"])
    big = {"text": "x" * (70 * 1024)}
    with db.transaction() as session:
        owner = session.scalar(select(Agent.user_id))
        tasks = {}
        for index, status in ((0, "completed"), (1, "failed"), (1, "processing"), (2, "queued")):
            task = Task(user_id=owner, agent_id=uuid.UUID(agent["id"]), agent_type="validation", title="item",
                        input_data={}, status=status, run_id=run_id, step_id="fan", item_index=index)
            session.add(task)
            session.flush()
            tasks[index] = task.id
        session.execute(update(RunStep).where(RunStep.run_id == run_id, RunStep.step_id == "check")
                        .values(status="succeeded", attempts=1, output=big, task_id=tasks[0]))
        session.execute(update(RunStep).where(RunStep.run_id == run_id, RunStep.step_id == "fan")
                        .values(status="running", attempts=1, items_total=3, items_failed=1))
    got = api.call("GET", f"/runs/{run_id}").json_body
    check, fanned = got["steps"]
    assert check["output"] == {"truncated": True, "task_id": str(tasks[0]), "bytes": len(json.dumps(big,
                                                                                               separators=(",", ":")))}
    assert fanned["for_each"]["items_total"] == 3 and fanned["for_each"]["items_failed"] == 1
    assert fanned["for_each"]["items"] == [
        {"index": 0, "status": "succeeded", "task_id": str(tasks[0])},
        {"index": 1, "status": "running", "task_id": str(tasks[1])},  # the retry (latest task) is what shows
        {"index": 2, "status": "pending", "task_id": str(tasks[2])}]


def test_another_users_run_is_404(api: Api, other_api: Api, container: Any) -> None:
    container.runs.launcher.state_machines = FakeMachines()
    api.signup()
    wf = create_workflow(api)
    run = start(api, wf["id"]).json_body
    other_api.signup()
    assert_envelope(other_api.call("GET", f"/runs/{run['id']}"), 404, "RUN_NOT_FOUND")
    assert_envelope(other_api.call("GET", f"/runs/{uuid.uuid4()}"), 404, "RUN_NOT_FOUND")
    assert_envelope(other_api.call("GET", "/runs/nope"), 404, "RUN_NOT_FOUND")
    assert_envelope(start(other_api, wf["id"]), 404, "WORKFLOW_NOT_FOUND")


def test_a_plan_is_made_and_started_in_the_callers_transaction(api: Api, container: Any, db: Any) -> None:
    """What the orchestrator does with its plan: workflow (kind "plan") + run in its own transaction, then launch."""
    from chalicelib.services.workflows import parse_create

    container.runs.launcher.state_machines = fake = FakeMachines()
    api.signup()
    with db.read() as session:
        owner = session.scalar(select(User.id))
    assert owner is not None
    with db.transaction() as session:
        workflow, version = container.workflows.create_in(
            session, owner, parse_create({"name": "plan", "steps": [task_step("only")]}), kind="plan")
        run = container.runs.create_in(session, owner, workflow, version, {})
    assert fake.calls == []  # nothing reaches Step Functions before the rows are committed
    container.runs.launch(run)
    assert [c[1] for c in fake.named("start")] == [f"{run.id.hex}-1"]
    got = api.call("GET", f"/runs/{run.id}").json_body
    assert got["status"] == "running" and [s["step_id"] for s in got["steps"]] == ["only"]
    assert api.call("GET", "/workflows").json_body["items"] == []  # plans are not listed...
    assert api.call("GET", f"/workflows/{workflow.id}").status_code == 200  # ...but readable
    assert_envelope(api.call("PUT", f"/workflows/{workflow.id}", definition()), 404, "WORKFLOW_NOT_FOUND")
    assert_envelope(start(api, str(workflow.id)), 404, "WORKFLOW_NOT_FOUND")
