"""The `validation` agent: real JSON Schema validation, every violation located."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydantic
import pytest

from chalicelib.agents.base import AgentOutput
from chalicelib.agents.registry import get_agent, validate_input
from chalicelib.agents.validation import ValidationAgent, ValidationInput, json_pointer
from chalicelib.errors import AgentInputError, ValidationError

REPO_ROOT = Path(__file__).resolve().parents[2]

ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "items"],
    "properties": {
        "id": {"type": "integer"},
        "email": {"type": "string", "format": "email"},
        "items": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["sku", "qty"],
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
            },
        },
    },
}


def run(schema: Any, payload: Any) -> AgentOutput:
    agent = get_agent("validation")
    return agent.run(ValidationInput.model_validate({"schema": schema, "payload": payload}), {})


def test_registry_returns_the_validation_agent() -> None:
    agent = get_agent("validation")
    assert isinstance(agent, ValidationAgent)
    assert agent.type == "validation"
    assert agent.Input is ValidationInput


def test_reports_every_violation_with_exact_paths() -> None:
    payload = {"id": "A-17", "items": [{"qty": 2}, {"sku": "b", "qty": 0}]}

    result = run(ORDER_SCHEMA, payload)

    assert result.output["valid"] is False
    assert result.output["error_count"] == 3
    assert result.output["validator"] == "Draft202012Validator"
    assert result.output["errors"] == [
        {
            "path": "/id",
            "message": "'A-17' is not of type 'integer'",
            "validator": "type",
            "schema_path": "/properties/id/type",
        },
        {
            "path": "/items/0",
            "message": "'sku' is a required property",
            "validator": "required",
            "schema_path": "/properties/items/items/required",
        },
        {
            "path": "/items/1/qty",
            "message": "0 is less than the minimum of 1",
            "validator": "minimum",
            "schema_path": "/properties/items/items/properties/qty/minimum",
        },
    ]
    assert result.metrics["violations"] == 3
    assert isinstance(result.metrics["duration_ms"], float)


def test_valid_payload() -> None:
    result = run(ORDER_SCHEMA, {"id": 7, "email": "ops@example.com", "items": [{"sku": "a", "qty": 1}]})

    assert result.output == {"valid": True, "error_count": 0, "errors": [], "errors_truncated": False,
                             "validator": "Draft202012Validator"}
    assert result.metrics["violations"] == 0


def test_missing_root_property_is_reported_at_the_root() -> None:
    result = run(ORDER_SCHEMA, {"items": [{"sku": "a", "qty": 1}]})

    assert [(e["path"], e["validator"]) for e in result.output["errors"]] == [("", "required")]


def test_array_indices_sort_numerically() -> None:
    items = [{"sku": "ok", "qty": 1} for _ in range(11)]
    items[10]["qty"] = -1
    items[2]["qty"] = 0

    result = run(ORDER_SCHEMA, {"id": 1, "items": items})

    assert [e["path"] for e in result.output["errors"]] == ["/items/2/qty", "/items/10/qty"]


def test_formats_are_checked() -> None:
    schema = {
        "type": "object",
        "properties": {"email": {"format": "email"}, "born": {"format": "date"}, "ip": {"format": "ipv4"}},
    }

    result = run(schema, {"email": "not-an-address", "born": "2024-02-30", "ip": "10.0.0.1"})

    assert [(e["path"], e["validator"]) for e in result.output["errors"]] == [
        ("/born", "format"),
        ("/email", "format"),
    ]


def test_pointer_escapes_tilde_and_slash() -> None:
    assert json_pointer([]) == ""
    assert json_pointer(["a/b", "m~n", 0]) == "/a~1b/m~0n/0"
    # "~1" in a key must not be read back as "/": its "~" is escaped first.
    assert json_pointer(["~1"]) == "/~01"

    schema = {"properties": {"a/b": {"type": "string"}, "m~n": {"type": "string"}}}
    result = run(schema, {"a/b": 1, "m~n": 2})

    assert [(e["path"], e["schema_path"]) for e in result.output["errors"]] == [
        ("/a~1b", "/properties/a~1b/type"),
        ("/m~0n", "/properties/m~0n/type"),
    ]


def test_local_refs_resolve() -> None:
    schema = {
        "$defs": {"positive": {"type": "number", "exclusiveMinimum": 0}},
        "type": "array",
        "items": {"$ref": "#/$defs/positive"},
    }

    result = run(schema, [1, 2.5, -3])

    assert result.output["errors"] == [
        {
            "path": "/2",
            "message": "-3 is less than or equal to the minimum of 0",
            "validator": "exclusiveMinimum",
            # jsonschema's schema path is the keyword trail, which leaves `$ref` out.
            "schema_path": "/items/exclusiveMinimum",
        }
    ]


def test_dialect_follows_dollar_schema() -> None:
    # Draft 7's array form of "items" validates positionally (2020-12 calls it prefixItems).
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "items": [{"type": "string"}, {"type": "integer"}]}

    result = run(schema, ["a", "b"])

    assert result.output["validator"] == "Draft7Validator"
    assert [(e["path"], e["validator"]) for e in result.output["errors"]] == [("/1", "type")]


def test_null_payload_is_a_value_not_a_missing_one() -> None:
    assert run({"type": "null"}, None).output["valid"] is True

    errors = run({"type": "object"}, None).output["errors"]
    assert [(e["path"], e["message"]) for e in errors] == [("", "None is not of type 'object'")]


def test_invalid_schema_is_an_agent_input_error() -> None:
    schema = {"type": "object", "properties": {"qty": {"type": "integer", "minimum": "one"}}}

    with pytest.raises(AgentInputError) as caught:
        run(schema, {"qty": 1})

    assert caught.value.code == "AGENT_INPUT_INVALID"
    assert caught.value.details == {
        "schema_path": "/properties/qty/minimum",
        "reason": "'one' is not of type 'number'",
    }
    assert "not a valid" in caught.value.message


def test_unknown_dialect_is_rejected() -> None:
    with pytest.raises(AgentInputError) as caught:
        run({"$schema": "https://example.com/my-dialect", "type": "string"}, "x")

    assert caught.value.details["schema_path"] == "/$schema"


def test_remote_ref_is_not_fetched(monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib.request

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the agent tried to fetch a remote $ref")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)

    with pytest.raises(AgentInputError, match="cannot be resolved"):
        run({"$ref": "https://example.com/order.schema.json"}, {})


def test_self_referencing_schema_is_an_input_error() -> None:
    with pytest.raises(AgentInputError, match="recurses"):
        run({"$ref": "#"}, 1)


@pytest.mark.parametrize(
    ("input_data", "missing_or_extra"),
    [
        ({"payload": 1}, ("schema",)),
        ({"schema": {}}, ("payload",)),
        ({"schema": {}, "payload": 1, "strict": True}, ("strict",)),
        ({"schema": [1, 2], "payload": 1}, ("schema",)),
    ],
)
def test_input_model_rejects_bad_input(input_data: dict[str, Any], missing_or_extra: tuple[str, ...]) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        ValidationInput.model_validate(input_data)

    assert [err["loc"] for err in caught.value.errors()] == [missing_or_extra]


def test_validate_input_lists_every_bad_location() -> None:
    with pytest.raises(ValidationError) as caught:
        validate_input("validation", {"schema": "not a dict", "extra": 1})

    locs = sorted(err["loc"] for err in caught.value.details["errors"])
    assert locs == [["input_data", "extra"], ["input_data", "payload"], ["input_data", "schema"]]


def test_validate_input_normalises_under_the_public_keys() -> None:
    normalised = validate_input("validation", {"schema": ORDER_SCHEMA, "payload": None})

    assert normalised == {"schema": ORDER_SCHEMA, "payload": None}
    # What the API stores must be readable by the worker.
    reparsed = ValidationInput.model_validate(normalised)
    assert reparsed.model_dump(by_alias=True) == normalised


def test_output_is_json_serialisable() -> None:
    result = run(ORDER_SCHEMA, {"id": "x", "items": []})

    assert json.loads(json.dumps(result.output)) == result.output
    assert [e["validator"] for e in result.output["errors"]] == ["type", "minItems"]


def test_jsonschema_is_not_imported_with_the_module() -> None:
    code = "import sys, chalicelib.agents.validation; print('jsonschema' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
