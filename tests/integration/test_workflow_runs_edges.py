"""Workflow runtime edges on the embedded moto: late answers, large outputs by reference, for_each tolerance,
engine steps, and the reconciler repairing a run whose report was lost."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from botocore.stub import Stubber
from sqlalchemy import select, update

from chalicelib.db.models import OutboxMessage
from chalicelib.db.types import utcnow
from chalicelib.db.workflow_models import RunStep, WorkflowRun
from chalicelib.engines import Engine, EngineContext, registry
from chalicelib.workflows import runstate
from chalicelib.workflows.reconcile import Reconciler
from tests.integration.workflow_support import WorkflowHarness, harness, make_agent, make_user, wf_aws, wf_container

__all__ = ["harness", "wf_aws", "wf_container"]

BIG = 300 * 1024


class Big(Engine):
    name = "test-big"
    input_schema = {"type": "object", "properties": {"size": {"type": "integer"}}, "required": ["size"]}

    def run(self, ctx: EngineContext, input: dict[str, Any]) -> dict[str, Any]:  # noqa: A002
        return {"blob": "x" * input["size"]}


class Length(Engine):
    name = "test-length"
    input_schema = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}

    def run(self, ctx: EngineContext, input: dict[str, Any]) -> dict[str, Any]:  # noqa: A002
        return {"length": len(input["text"])}


@pytest.fixture
def engines() -> Iterator[None]:
    registry.register(Big(), replace=True)
    registry.register(Length(), replace=True)
    yield
    registry.unregister("test-big")
    registry.unregister("test-length")


def test_a_step_output_over_200_kb_passes_to_the_next_step_by_reference(harness: WorkflowHarness,
                                                                         engines: None) -> None:
    user = make_user(harness.db)
    version = harness.create(user, {"steps": [
        {"step_id": "big", "engine": "test-big", "input_data": {"size": "$.input.size"}},
        {"step_id": "measure", "engine": "test-length", "depends_on": ["big"],
         "input_data": {"text": "$.steps.big.output.blob"}},
        # a second sink: the run's output shows the large output by reference
        {"step_id": "again", "engine": "test-big", "depends_on": ["big"], "input_data": {"size": "$.input.size"}}]})
    run_id = harness.start(user, version, {"size": BIG})
    harness.drive(lambda: harness.status(run_id) != "running")
    run, steps = harness.run(run_id), harness.steps(run_id)
    assert run.status == "succeeded", harness.describe()
    assert steps["measure"].output == {"length": BIG}  # the whole 300 KB reached the next step
    assert run.output is not None
    assert run.output["steps"]["measure"] == {"length": BIG}
    assert run.output["steps"]["again"]["reference"]["step_id"] == "again"  # too large to inline
    # Nothing large ever went through the state machine: every event's payload is small.
    events = harness.sfn.get_execution_history(executionArn=run.execution_arn, maxResults=1000)["events"]
    assert max(len(json.dumps(e, default=str)) for e in events) < 10_000


def test_an_engine_input_that_fails_its_schema_fails_the_step_clearly(harness: WorkflowHarness,
                                                                     engines: None) -> None:
    user = make_user(harness.db)
    version = harness.create(user, {"steps": [
        {"step_id": "bad", "engine": "test-length", "input_data": {"text": "$.input.number"}}]})
    run_id = harness.start(user, version, {"number": 5})
    harness.drive(lambda: harness.status(run_id) != "running")
    step = harness.steps(run_id)["bad"]
    assert harness.status(run_id) == "failed"
    assert step.status == "failed" and step.error["code"] == "ENGINE_INPUT_INVALID"


def test_an_unresolvable_reference_fails_the_step_with_a_code_not_a_crash(harness: WorkflowHarness) -> None:
    user = make_user(harness.db)
    make_agent(harness.db, user)
    version = harness.create(user, {"steps": [
        {"step_id": "a", "agent_type": "validation", "input_data": {"schema": {}, "payload": "$.input.missing"}}]})
    run_id = harness.start(user, version, {})
    harness.drive(lambda: harness.status(run_id) != "running")
    step = harness.steps(run_id)["a"]
    assert step.status == "failed" and step.error["code"] == "REFERENCE_UNRESOLVED"
    assert harness.task_counts(run_id) == {}


@pytest.mark.parametrize(("tolerated", "status"), [(20, "succeeded"), (0, "failed")])
def test_for_each_failures_within_the_tolerance_do_not_fail_the_step(harness: WorkflowHarness, tolerated: float,
                                                                      status: str) -> None:
    user = make_user(harness.db)
    make_agent(harness.db, user)
    items = [{"type": "object"}] * 4 + [{"type": "nonsense"}]  # the last item's task fails
    version = harness.create(user, {"steps": [
        {"step_id": "fan", "agent_type": "validation", "for_each": "$.input.schemas", "max_concurrency": 2,
         "tolerated_failure_percentage": tolerated, "input_data": {"schema": "$.item", "payload": {}}}]})
    run_id = harness.start(user, version, {"schemas": items})
    harness.drive(lambda: harness.status(run_id) != "running")
    run, fan = harness.run(run_id), harness.steps(run_id)["fan"]
    assert run.status == status, harness.describe()
    assert fan.items_failed == 1 and fan.status == status
    if status == "failed":
        assert run.error is not None and run.error["code"] == "TOLERANCE_EXCEEDED"


def test_a_for_each_over_too_many_items_fails_foreach_too_large(harness: WorkflowHarness,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    control = harness.c.workflow_control
    monkeypatch.setattr(control, "settings", control.settings.model_copy(update={"workflow_foreach_max_items": 3}))
    user = make_user(harness.db)
    make_agent(harness.db, user)
    version = harness.create(user, {"steps": [
        {"step_id": "fan", "agent_type": "validation", "for_each": "$.input.items", "max_concurrency": 2,
         "input_data": {"schema": {}, "payload": "$.item"}}]})
    run_id = harness.start(user, version, {"items": [1, 2, 3, 4]})
    harness.drive(lambda: harness.status(run_id) != "running")
    fan = harness.steps(run_id)["fan"]
    assert fan.status == "failed" and fan.error["code"] == "FOREACH_TOO_LARGE"
    assert harness.task_counts(run_id) == {}


def _answer_row(harness: WorkflowHarness, action: str) -> tuple[uuid.UUID, uuid.UUID]:
    user = make_user(harness.db)
    workflow = harness.create(user, {"steps": [{"step_id": "s", "type": "approval"}]})
    with harness.db.transaction() as s:
        run = WorkflowRun(user_id=user, workflow_id=workflow, version_id=_version_of(s, workflow), status="running",
                          input={})
        s.add(run)
        s.flush()
        s.add(RunStep(run_id=run.id, step_id="s", status="running", attempts=1, items_failed=0))
        s.flush()
        row = runstate.answer(s, "bogus-token", run_id=run.id, step_id="s",
                              **({"output": {"status": "succeeded"}} if action == "succeed"
                                 else {"error": "Ymera.StepFailed", "cause": "x"}))
        s.info.pop(runstate.ANSWERS_KEY)
        return run.id, row.id


def _version_of(session: Any, workflow_id: uuid.UUID) -> uuid.UUID:
    from chalicelib.db.workflow_models import WorkflowVersion

    return session.scalar(select(WorkflowVersion.id).where(WorkflowVersion.workflow_id == workflow_id))


@pytest.mark.parametrize(("action", "method", "code"), [("succeed", "send_task_success", "TaskTimedOut"),
                                                        ("fail", "send_task_failure", "InvalidToken"),
                                                        ("succeed", "send_task_success", "TaskDoesNotExist")])
def test_a_late_or_duplicate_answer_is_recorded_not_raised(harness: WorkflowHarness, action: str, method: str,
                                                          code: str) -> None:
    run_id, outbox_id = _answer_row(harness, action)
    client = harness.c.callbacks.client  # type: ignore[attr-defined]
    with Stubber(client) as stub:
        stub.add_client_error(method, service_error_code=code, http_status_code=400)
        report = harness.c.relay.run_once()
        stub.assert_no_pending_responses()
    assert report.published == 1 and report.failed == 0
    with harness.db.read() as s:
        row = s.get(OutboxMessage, outbox_id)
        step = s.get(RunStep, (run_id, "s"))
        assert row is not None and row.published_at is not None and row.last_error.startswith("late")
        assert step is not None and step.error["late_completion"]["action"] == action


def test_any_other_callback_error_is_retried_with_backoff(harness: WorkflowHarness) -> None:
    _, outbox_id = _answer_row(harness, "succeed")
    client = harness.c.callbacks.client  # type: ignore[attr-defined]
    with Stubber(client) as stub:
        stub.add_client_error("send_task_success", service_error_code="ThrottlingException", http_status_code=400)
        report = harness.c.relay.run_once()
    assert report.published == 0 and report.failed == 1
    with harness.db.read() as s:
        row = s.get(OutboxMessage, outbox_id)
        assert row is not None and row.published_at is None and row.attempts == 1
        assert row.next_attempt_at is not None and "ThrottlingException" in (row.last_error or "")


def test_the_reconciler_repairs_a_run_whose_finished_report_was_lost(harness: WorkflowHarness) -> None:
    user = make_user(harness.db)
    make_agent(harness.db, user)
    version = harness.create(user, {"steps": [
        {"step_id": "a", "agent_type": "validation", "input_data": {"schema": {}, "payload": 1}}]})
    harness.paused.add("workflow-control")  # its workflow.finished report is never read
    run_id = harness.start(user, version)
    harness.drive(lambda: harness.execution_status(run_id) == "SUCCEEDED")
    assert harness.status(run_id) == "running"
    harness.sqs.purge_queue(QueueUrl=harness._queue_url("workflow-control"))  # the report is lost
    reconciler = Reconciler(harness.db, lambda: harness.c.workflow_reconciler.executions(), after_seconds=60)
    assert reconciler.sweep().looked_at == 0  # too recent: a report may still be on its way
    with harness.db.transaction() as s:
        s.execute(update(WorkflowRun).where(WorkflowRun.id == run_id)
                  .values(updated_at=utcnow() - timedelta(minutes=5)))
    report = reconciler.sweep()
    assert report.repaired == {"succeeded": 1}
    run = harness.run(run_id)
    assert run.status == "succeeded" and run.output == {"steps": {"a": harness.steps(run_id)["a"].output}}
    assert reconciler.sweep().looked_at == 0  # idempotent: nothing left to repair


def test_a_malformed_step_message_fails_alone_and_the_rest_of_the_batch_runs(harness: WorkflowHarness) -> None:
    from functions.agent_consumer import handler
    from tests.integration.conftest import FakeContext, sqs_event

    user = make_user(harness.db)
    make_agent(harness.db, user)
    workflow = harness.create(user, {"steps": [
        {"step_id": "a", "agent_type": "validation", "input_data": {"schema": {}, "payload": 1}}]})
    harness.paused.add("validation")
    run_id = harness.start(user, workflow)
    url = harness._queue_url("agent-validation")

    def received() -> list[dict[str, Any]]:
        return harness.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])

    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while not messages and time.monotonic() < deadline:
        messages = received()
    assert len(messages) == 1
    stranger = json.dumps({"kind": "workflow.step", "run_id": str(uuid.uuid4()), "step_id": "a",
                           "agent_type": "validation", "token": "t"})
    response = handler(sqs_event([("bad", stranger), ("good", messages[0]["Body"])]), FakeContext())
    assert response == {"batchItemFailures": [{"itemIdentifier": "bad"}]}
    harness.paused.clear()
    harness.drive(lambda: harness.status(run_id) != "running")
    assert harness.status(run_id) == "succeeded"
    assert harness.task_counts(run_id) == {"a": 1}


def test_a_dead_lettered_step_message_fails_its_task_and_the_run(harness: WorkflowHarness) -> None:
    from chalicelib.workflows import steps

    user = make_user(harness.db)
    make_agent(harness.db, user)
    workflow = harness.create(user, {"steps": [
        {"step_id": "a", "agent_type": "validation", "input_data": {"schema": {}, "payload": 1}}]})
    harness.paused.add("validation")
    run_id = harness.start(user, workflow)
    url = harness._queue_url("agent-validation")
    deadline, messages = time.monotonic() + 10, []
    while not messages and time.monotonic() < deadline:
        messages = harness.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1).get("Messages", [])
    body = messages[0]["Body"]
    with harness.db.transaction() as s:  # a consumer made the task, then kept failing until SQS gave up
        steps.materialise(s, steps.parse(body), "validation")  # type: ignore[arg-type]
    harness.sqs.delete_message(QueueUrl=url, ReceiptHandle=messages[0]["ReceiptHandle"])
    harness.sqs.send_message(QueueUrl=harness._queue_url("agent-validation-dlq"), MessageBody=body)
    assert harness.c.dead_letter_sweep.sweep() == 1
    harness.drive(lambda: harness.status(run_id) != "running")
    step = harness.steps(run_id)["a"]
    assert harness.status(run_id) == "failed"
    assert step.status == "failed" and step.error["code"] == "DELIVERY_FAILED"


def test_redrive_of_a_failed_for_each_reruns_only_its_failed_item(harness: WorkflowHarness) -> None:
    from chalicelib.agents.registry import get_agent
    from chalicelib.errors import AgentError

    user = make_user(harness.db)
    make_agent(harness.db, user)
    real, broken = get_agent("validation"), {"on": True}

    class FailsItemFour:
        Input = real.Input
        Config = real.Config

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def run(self, data: Any, config: Any, ctx: Any) -> Any:
            if broken["on"] and data.model_dump(mode="json").get("payload") == 4:
                raise AgentError("item 4 is broken for now", {})
            return real.run(data, config, ctx)

    harness.c.processor.agent_loader = lambda t: FailsItemFour() if t == "validation" else get_agent(t)  # type: ignore
    workflow = harness.create(user, {"steps": [
        # one item at a time, in order: item 4 fails after 0-3 have succeeded (run concurrently, item 4 could fail
        # first and, with 0% tolerated, cancel the others still in flight — a race a loaded machine loses)
        {"step_id": "fan", "agent_type": "validation", "for_each": "$.input.items", "max_concurrency": 1,
         "input_data": {"schema": {"type": "integer"}, "payload": "$.item"}}]})
    run_id = harness.start(user, workflow, {"items": [0, 1, 2, 3, 4]})
    harness.drive(lambda: harness.status(run_id) != "running")
    assert harness.status(run_id) == "failed"
    harness.drive(lambda: harness.steps(run_id)["fan"].output is not None and sum(
        1 for r in harness.steps(run_id)["fan"].output["results"].values() if r["status"] == "succeeded") == 4)
    broken["on"] = False
    harness.redrive(run_id)
    harness.drive(lambda: harness.status(run_id) != "running")
    fan = harness.steps(run_id)["fan"]
    assert harness.status(run_id) == "succeeded", harness.describe()
    assert harness.task_counts(run_id) == {"fan": 6}  # items 0-3 short-circuited, item 4 ran again
    assert fan.items_failed == 0 and fan.status == "succeeded"
