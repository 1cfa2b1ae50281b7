"""The ingress message (docs/producers.md): what an event producer sends to `<prefix>-ingress`.

Version 1 is this model; `schemas/ingress/task.v1.json` is generated from it (`python -m
chalicelib.schemas.ingress > schemas/ingress/task.v1.json`) and a test fails when the file is stale.
The consumer validates with the model, which is authoritative: its character rules (no control
characters, no lone surrogates) are expressed in the file as patterns.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator

from chalicelib.domain.agents import AGENT_TYPES
from chalicelib.schemas.common import PublicModel, StrictModel
from chalicelib.schemas.tasks import TaskCreate

SCHEMA_VERSIONS = (1,)
SCHEMA_ID = "https://ymera.dev/schemas/ingress/task.v1.json"
#: idempotency keys and correlation ids: printable ASCII without spaces, short enough to index.
TOKEN_PATTERN = r"^[\x21-\x7e]+$"
Token = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=TOKEN_PATTERN)]


class IngressTaskV1(TaskCreate):
    """One task to create, as its owner (the signing key's user) would with `POST /tasks`."""

    schema_version: Literal[1] = Field(description="Message format version; only 1 exists.")
    idempotency_key: Token = Field(
        description="Scoped to the key's owner: a second message with the same key creates no second task.")
    correlation_id: Token | None = Field(default=None, description="Yours; echoed in audit rows.")

    @field_validator("schema_version", mode="before")
    @classmethod
    def _a_number(cls, value: Any) -> Any:
        # JSON Schema's integer 1 is also 1.0 but never true: pydantic's lax Literal would take True.
        if isinstance(value, bool):
            raise ValueError("schema_version must be the number 1")
        return value


def json_schema() -> dict[str, Any]:
    """The published JSON Schema (draft 2020-12) of version 1."""
    schema = IngressTaskV1.model_json_schema()
    props = schema["properties"]
    # What the model's validators say and pydantic cannot express: exactly one target, a known type.
    props["agent_type"] = {"anyOf": [{"enum": list(AGENT_TYPES), "type": "string"}, {"type": "null"}],
                           "default": None, "title": "Agent Type"}
    props["schema_version"] = {"const": 1, "type": "integer", "title": "Schema Version",
                               "description": props["schema_version"].get("description", "")}
    schema["oneOf"] = [
        {"required": ["agent_id"], "properties": {"agent_id": {"type": "string"}, "agent_type": {"type": "null"}}},
        {"required": ["agent_type"], "properties": {"agent_type": {"type": "string"}, "agent_id": {"type": "null"}}},
    ]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}


class ProducerKeyCreate(StrictModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$")] = (
        Field(default="producer", description="A label for telling your producers apart."))


class ProducerKeyPublic(PublicModel):
    key_id: str
    name: str
    created_at: Any
    revoked_at: Any = None


class ProducerKeyCreated(ProducerKeyPublic):
    secret: str = Field(description="The HMAC-SHA256 signing secret. Shown once, never again.")


class ProducerKeyList(PublicModel):
    items: list[ProducerKeyPublic]


if __name__ == "__main__":
    print(json.dumps(json_schema(), indent=2, sort_keys=True))
