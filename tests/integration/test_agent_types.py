"""GET /agent-types describes every implemented type; configs are validated against the type."""

from __future__ import annotations

from chalicelib.agents import registry
from tests.integration.conftest import Api
from tests.integration.test_api_auth import assert_envelope


def test_every_type_is_described_with_a_valid_example(api: Api) -> None:
    api.signup()
    r = api.call("GET", "/agent-types")
    assert r.status_code == 200
    described = {item["type"]: item for item in r.json_body["items"]}
    assert set(described) == set(registry.available_types())
    for agent_type, item in described.items():
        assert item["description"] and item["input_schema"]["type"] == "object"
        # The advertised example is accepted by POST /tasks' validation.
        registry.validate_input(agent_type, item["example_input"])


def test_agent_types_needs_a_token(api: Api) -> None:
    assert_envelope(api.call("GET", "/agent-types"), 401, "AUTHENTICATION_ERROR")


def test_unknown_config_keys_are_refused_on_create_and_update(api: Api) -> None:
    api.signup()
    error = assert_envelope(api.call("POST", "/agents", {"name": "v", "type": "validation",
                                                         "config": {"temperature": 2}}), 422, "VALIDATION_ERROR")
    assert error["details"]["errors"][0]["loc"] == ["config", "temperature"]
    agent = api.agent()
    assert_envelope(api.call("PUT", f"/agents/{agent['id']}", {"config": {"x": 1}}), 422, "VALIDATION_ERROR")


def test_every_advertised_example_runs_to_completion(api: Api) -> None:
    """GIVEN a new user with one agent of each type that needs no language model
    WHEN they send each type's advertised example_input THEN every task completes (a copied
    example that always fails — the learning type's named a feedback id nobody has — is a bug)."""
    import json

    from functions.agent_consumer import handler
    from tests.integration.conftest import FakeContext, sqs_event

    api.signup()
    # The orchestrator's example plan runs as a workflow run: tests/integration/test_orchestrator.py
    # (test_the_advertised_example_plan_runs_to_completion) drives it on the embedded Step Functions.
    types = [t for t in registry.available_types() if not registry.get_agent(t).provider_backed
             and t != "orchestrator"]
    assert len(types) >= 7
    for agent_type in types:
        agent = api.agent(agent_type, name=f"example-{agent_type}")
        example = registry.get_agent(agent_type).example_input
        created = api.call("POST", "/tasks", {"agent_id": agent["id"], "title": "example", "input_data": example})
        assert created.status_code == 202, (agent_type, created.json_body)
        body = json.dumps({"task_id": created.json_body["id"], "agent_type": agent_type})
        assert handler(sqs_event([("m1", body)], agent_type), FakeContext()) == {"batchItemFailures": []}
        task = api.call("GET", f"/tasks/{created.json_body['id']}").json_body
        assert task["status"] == "completed", (agent_type, task.get("error"))
