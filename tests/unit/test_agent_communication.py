"""A communication task's input: one destination, a known type, a bounded non-empty body."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from chalicelib.agents import registry
from chalicelib.errors import ValidationError


def messages_of(input_data: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as err:
        registry.validate_input("communication", input_data)
    return [e["msg"] for e in err.value.details["errors"]]


def test_direct_and_broadcast_inputs_are_accepted() -> None:
    to = str(uuid.uuid4())
    assert registry.validate_input("communication", {"to_agent_id": to, "body": "hi"})["to_agent_id"] == to
    assert registry.validate_input("communication", {"to_type": "llm", "body": {"k": [1]}})["to_type"] == "llm"


@pytest.mark.parametrize(("data", "expected"), [
    ({"body": "hi"}, "exactly one of to_agent_id or to_type"),
    ({"to_agent_id": str(uuid.uuid4()), "to_type": "llm", "body": "hi"}, "exactly one of"),
    ({"to_type": "wizard", "body": "hi"}, "unknown agent type 'wizard'"),
    ({"to_type": "llm", "body": "   "}, "body must not be empty"),
    ({"to_type": "llm", "body": "x" * 70_000}, "at most 65536 bytes"),
    ({"to_type": "llm"}, "Field required"),
], ids=["no-destination", "two-destinations", "unknown-type", "blank-body", "huge-body", "no-body"])
def test_bad_messages_are_refused(data: dict[str, Any], expected: str) -> None:
    assert any(expected in m for m in messages_of(data)), messages_of(data)
