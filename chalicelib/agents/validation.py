"""The `validation` agent: check a JSON payload against a JSON Schema.

Every violation is reported (not just the first), each located by RFC 6901
JSON Pointers so clients can map it back onto their document. `jsonschema`
is imported inside `run` to keep it off the cold-start path of other consumers.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.agents.base import Agent, AgentContext, AgentOutput
from chalicelib.errors import AgentInputError

if TYPE_CHECKING:
    # jsonschema ships no type hints (types-jsonschema is not a dependency).
    from jsonschema.exceptions import ValidationError as SchemaViolation  # type: ignore[import-untyped]
    from jsonschema.protocols import Validator  # type: ignore[import-untyped]


def json_pointer(parts: Iterable[str | int]) -> str:
    """RFC 6901 pointer; `~` must be escaped before `/` or `~1` would be re-escaped."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _path_sort_key(parts: Iterable[str | int]) -> tuple[tuple[int, int, str], ...]:
    # Array indices sort numerically (/items/2 before /items/10), and never
    # compare an int against a str, which would raise.
    return tuple((0, p, "") if isinstance(p, int) else (1, 0, p) for p in parts)


class ValidationInput(BaseModel):
    # `schema` shadows a (deprecated) BaseModel attribute, so the field has
    # another name; the alias keeps the public key, and serialising by alias
    # keeps `validate_input`'s normalised input_data readable by this model.
    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    json_schema: dict[str, Any] = Field(alias="schema", description="The JSON Schema to validate against.")
    # `Field(...)` makes the key required while still accepting JSON `null`.
    payload: Any = Field(..., description="The JSON value to validate.")


class ValidationAgent(Agent):
    type = "validation"
    Input = ValidationInput
    description = "Validates a JSON payload against a JSON Schema and reports every violation."
    example_input = {
        "schema": {"type": "object", "required": ["id", "qty"],
                   "properties": {"id": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}}},
        "payload": {"id": "A-1", "qty": 0},
    }
    capabilities = ("json-schema", "draft-2020-12", "draft-2019-09", "draft-7", "draft-6", "draft-4", "format-checking")

    def run(self, data: BaseModel, config: Mapping[str, Any], ctx: AgentContext | None = None) -> AgentOutput:
        assert isinstance(data, ValidationInput)
        started = time.perf_counter()
        validator = _build_validator(data.json_schema)
        errors = _collect_errors(validator, data.payload)
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        return AgentOutput(
            output={
                "valid": not errors,
                "error_count": len(errors),
                "errors": errors,
                "validator": type(validator).__name__,
            },
            metrics={"duration_ms": duration_ms, "violations": len(errors)},
        )


def _validator_class(schema: dict[str, Any]) -> type[Validator]:
    from jsonschema import validators  # type: ignore[import-untyped]

    if "$schema" not in schema:
        default: type[Validator] = validators.Draft202012Validator
        return default
    dialect = schema["$schema"]
    # An unknown dialect would silently fall back to the latest draft, which
    # can change the meaning of the schema; better to say so.
    found = validators.validator_for(schema, default=None) if isinstance(dialect, str) else None
    if found is None:
        raise AgentInputError(
            "the schema's $schema names a JSON Schema dialect that is not supported",
            {"schema_path": "/$schema", "reason": f"unknown dialect {dialect!r}"},
        )
    return found


def _build_validator(schema: dict[str, Any]) -> Validator:
    import referencing
    from jsonschema.exceptions import SchemaError

    cls = _validator_class(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        raise AgentInputError(
            f"the schema is not a valid {cls.__name__.removesuffix('Validator')} JSON Schema: {exc.message}",
            # In meta-validation the user's schema is the instance, so the
            # error's instance path is where in *their* schema the problem is.
            {"schema_path": json_pointer(exc.absolute_path), "reason": exc.message},
        ) from exc
    # An empty registry (combined by jsonschema with the bundled meta-schemas)
    # means a remote `$ref` is unresolvable instead of fetched over the network.
    return cls(schema, registry=referencing.Registry(), format_checker=cls.FORMAT_CHECKER)


def _collect_errors(validator: Validator, payload: Any) -> list[dict[str, Any]]:
    from referencing.exceptions import Unresolvable

    try:
        found = list(validator.iter_errors(payload))
    except Unresolvable as exc:
        raise AgentInputError(
            "the schema contains a $ref that cannot be resolved (remote references are not fetched)",
            {"schema_path": None, "reason": str(exc)},
        ) from exc
    except RecursionError as exc:
        raise AgentInputError(
            "the schema recurses without bound (e.g. a $ref to itself with no keyword in between)",
            {"schema_path": None, "reason": "maximum recursion depth exceeded"},
        ) from exc
    found.sort(key=_error_sort_key)
    return [
        {
            "path": json_pointer(err.absolute_path),
            "message": err.message,
            "validator": str(err.validator),
            "schema_path": json_pointer(err.absolute_schema_path),
        }
        for err in found
    ]


def _error_sort_key(err: SchemaViolation) -> tuple[Any, ...]:
    return (
        _path_sort_key(err.absolute_path),
        _path_sort_key(err.absolute_schema_path),
        err.message,
    )
