"""The boto3 StateMachines adapter against moto's Step Functions (execution on): create is idempotent and
follows a changed definition, executions start and are described, redrive is "not supported" (False), and an
unreachable endpoint is a DependencyUnavailableError (503), never a success."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.errors import DependencyUnavailableError
from chalicelib.messaging.states import SfnStateMachines, make_states_client

ROLE = "arn:aws:iam::123456789012:role/ymera-test-workflow"
PASS = {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}
FAIL = {"StartAt": "F", "States": {"F": {"Type": "Fail", "Error": "Ymera.StepFailed", "Cause": "boom"}}}


@pytest.fixture
def machines(monkeypatch: pytest.MonkeyPatch) -> Iterator[SfnStateMachines]:
    from moto import mock_aws

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        yield SfnStateMachines(lambda: make_states_client("us-east-1", None, 2.0))


def wait_for(machines: SfnStateMachines, arn: str, status: str) -> Any:
    for _ in range(100):
        state = machines.describe_execution(arn)
        if state.status == status:
            return state
        time.sleep(0.05)
    raise AssertionError(f"{arn} never became {status}: {machines.describe_execution(arn)}")


def test_ensure_is_idempotent_and_updates_a_changed_definition(machines: SfnStateMachines) -> None:
    first = machines.ensure_state_machine("ymera-test-wf-a", PASS, ROLE)
    assert machines.ensure_state_machine("ymera-test-wf-a", PASS, ROLE) == first
    assert len(machines.client.list_state_machines()["stateMachines"]) == 1
    assert machines.ensure_state_machine("ymera-test-wf-a", FAIL, ROLE) == first
    described = machines.client.describe_state_machine(stateMachineArn=first)
    assert json.loads(described["definition"]) == FAIL  # moto keeps the old one on create: we update it


def test_start_describe_and_history(machines: SfnStateMachines) -> None:
    ok = machines.start_execution(machines.ensure_state_machine("ymera-test-wf-ok", PASS, ROLE), "run-1",
                                  {"run_id": "x", "execution": 1})
    assert ok.endswith(":run-1")
    assert wait_for(machines, ok, "SUCCEEDED").error is None
    bad = machines.start_execution(machines.ensure_state_machine("ymera-test-wf-bad", FAIL, ROLE), "run-2", {})
    state = wait_for(machines, bad, "FAILED")
    assert state.error == "Ymera.StepFailed" and state.cause == "boom"
    events = machines.history(bad)
    assert events and events[0]["type"] == "ExecutionFailed"  # newest first
    assert len(machines.history(bad, max_events=1)) == 1


def test_redrive_is_false_where_the_endpoint_lacks_it(machines: SfnStateMachines) -> None:
    arn = machines.start_execution(machines.ensure_state_machine("ymera-test-wf-r", FAIL, ROLE), "r-1", {})
    wait_for(machines, arn, "FAILED")
    assert machines.redrive_execution(arn) is False
    machines.stop_execution(arn, "Ymera.RunCancelled", "cancelled")  # accepted (moto ignores it)


def test_redrive_is_false_when_the_endpoint_answers_500() -> None:
    from botocore.stub import Stubber

    machines = SfnStateMachines(lambda: make_states_client("us-east-1", None, 2.0))
    arn = "arn:aws:states:us-east-1:123456789012:execution:m:e"
    with Stubber(machines.client) as stub:
        stub.add_client_error("redrive_execution", "InternalFailure", "not implemented", 500)
        stub.add_client_error("redrive_execution", "ExecutionNotRedrivable", "no", 400)
        stub.add_response("redrive_execution", {"redriveDate": "2026-01-01T00:00:00Z"}, {"executionArn": arn})
        assert machines.redrive_execution(arn) is False
        with pytest.raises(Exception, match="ExecutionNotRedrivable"):
            machines.redrive_execution(arn)
        assert machines.redrive_execution(arn) is True


def test_unreachable_endpoint_is_dependency_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    machines = SfnStateMachines(lambda: make_states_client("us-east-1", "http://127.0.0.1:9", 0.5))
    with pytest.raises(DependencyUnavailableError) as caught:
        machines.ensure_state_machine("ymera-test-wf-x", PASS, ROLE)
    assert caught.value.details["dependency"] == "stepfunctions"
    with pytest.raises(DependencyUnavailableError):
        machines.start_execution("arn:aws:states:us-east-1:123456789012:stateMachine:x", "n-1", {})


def test_already_exists_with_another_definition_is_updated_in_place() -> None:
    """AWS answers StateMachineAlreadyExists when the name exists with another definition (moto does not)."""
    from botocore.stub import Stubber

    machines = SfnStateMachines(lambda: make_states_client("us-east-1", None, 2.0))
    arn = "arn:aws:states:us-east-1:123456789012:stateMachine:ymera-test-wf-a"
    with Stubber(machines.client) as stub:
        stub.add_client_error("create_state_machine", "StateMachineAlreadyExists", "exists", 400)
        stub.add_response("describe_state_machine", {
            "stateMachineArn": arn, "name": "ymera-test-wf-a", "definition": json.dumps(FAIL), "roleArn": ROLE,
            "type": "STANDARD", "creationDate": "2026-01-01T00:00:00Z"}, {"stateMachineArn": arn})
        stub.add_response("update_state_machine", {"updateDate": "2026-01-01T00:00:00Z"},
                          {"stateMachineArn": arn, "definition": json.dumps(PASS, separators=(",", ":"),
                                                                            sort_keys=True), "roleArn": ROLE})
        assert machines.ensure_state_machine("ymera-test-wf-a", PASS, ROLE) == arn
        stub.assert_no_pending_responses()
