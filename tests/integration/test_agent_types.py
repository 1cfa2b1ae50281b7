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
