"""What GET /engines and POST /engines/{name} carry (documented in chalicelib/api/spec.py)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, RootModel

from chalicelib.schemas.common import PublicModel


class EngineDescription(PublicModel):
    name: str
    description: str
    input_schema: dict[str, Any] = Field(description="JSON Schema (draft 2020-12) of POST /engines/{name}'s body.")
    output_schema: dict[str, Any] = Field(description="JSON Schema of the answer.")
    example: dict[str, Any] = Field(description="A valid input: POST it to try the engine.")


class EngineList(PublicModel):
    items: list[EngineDescription]


class EngineInput(RootModel[dict[str, Any]]):
    """The engine's input, a JSON object checked against its `input_schema` (every violation at once)."""
