"""The published JSON Schema (schemas/ingress/task.v1.json) and the model the consumer validates with agree."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from chalicelib.schemas.ingress import IngressTaskV1, json_schema

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schemas" / "ingress" / "task.v1.json"
AGENT = str(uuid.UUID(int=7))
BASE: dict[str, Any] = {"schema_version": 1, "agent_id": AGENT, "title": "t", "idempotency_key": "k-1"}

ACCEPTED = [
    BASE,
    {**BASE, "priority": "high", "input_data": {"a": [1, 2]}, "description": "d", "correlation_id": "c-9"},
    {**{k: v for k, v in BASE.items() if k != "agent_id"}, "agent_type": "validation"},
    {**BASE, "correlation_id": None, "description": None},
    {**BASE, "schema_version": 1.0},  # the same JSON number as 1
]
REFUSED = [
    {k: v for k, v in BASE.items() if k != "title"},
    {k: v for k, v in BASE.items() if k != "idempotency_key"},
    {k: v for k, v in BASE.items() if k != "schema_version"},
    {k: v for k, v in BASE.items() if k != "agent_id"},  # no target
    {**BASE, "agent_type": "validation"},  # two targets
    {**BASE, "schema_version": 2},
    {**BASE, "schema_version": "1"},
    {**BASE, "schema_version": True},
    {**BASE, "agent_id": "not-a-uuid"},
    {**BASE, "priority": "urgent"},
    {**BASE, "title": ""},
    {**BASE, "title": "x" * 201},
    {**BASE, "idempotency_key": "has space"},
    {**BASE, "idempotency_key": "k" * 129},
    {**BASE, "input_data": []},
    {**BASE, "unknown": 1},
    {**{k: v for k, v in BASE.items() if k != "agent_id"}, "agent_type": "no-such-type"},
    {**BASE, "description": "bell\x07"},
]


def file_schema() -> dict[str, Any]:
    return dict(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))


def test_the_schema_file_is_generated_from_the_model_and_not_stale() -> None:
    assert file_schema() == json_schema(), (
        "schemas/ingress/task.v1.json is stale: python -m chalicelib.schemas.ingress > schemas/ingress/task.v1.json")


def _model_accepts(doc: dict[str, Any]) -> bool:
    try:
        IngressTaskV1.model_validate(doc)
    except ValidationError:
        return False
    return True


def _file_accepts(doc: dict[str, Any]) -> bool:
    validator = jsonschema.Draft202012Validator(file_schema(), format_checker=jsonschema.FormatChecker())
    return not list(validator.iter_errors(doc))


@pytest.mark.parametrize("doc", ACCEPTED)
def test_both_accept(doc: dict[str, Any]) -> None:
    assert _model_accepts(doc) and _file_accepts(doc)


@pytest.mark.parametrize("doc", REFUSED)
def test_both_refuse(doc: dict[str, Any]) -> None:
    assert not _model_accepts(doc)
    assert not _file_accepts(doc)
