"""Caps on text inputs shared by agent types: total size is each field's `max_length`; this adds line length.

A line cap keeps per-line work (secret patterns, syntax-error echoes, diagnostics quoting a sentence) small
whatever a scanner's constant factors, and is shown in the input schema (`x-max-line-length`) so
`GET /agent-types` tells clients before they send. Use as
`field: Annotated[str, lines_within()] = Field(max_length=..., json_schema_extra=line_schema())`.
"""

from __future__ import annotations

from typing import Any

from pydantic import AfterValidator

MAX_LINE_CHARS = 32_768


def lines_within(limit: int = MAX_LINE_CHARS) -> Any:
    def check(value: str) -> str:
        if len(value) > limit:  # only then can a line be too long; splitlines is linear
            for number, line in enumerate(value.splitlines(), 1):
                if len(line) > limit:
                    raise ValueError(f"line {number} is {len(line)} characters long; at most {limit} are accepted")
        return value

    return AfterValidator(check)


def line_schema(limit: int = MAX_LINE_CHARS) -> dict[str, Any]:
    return {"x-max-line-length": limit}
