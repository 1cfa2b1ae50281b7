"""The `validation` agent: a JSON payload against a JSON Schema, or data-quality rules over a list of records.

Two input shapes, told apart by their keys:
- `{"schema", "payload"}`: JSON Schema validation. Every violation is reported (not just the first), each
  located by RFC 6901 JSON Pointers so clients can map it back onto their document.
- `{"records", "rules"}`: data-quality checks (required, types, ranges, unique, max_null_ratio) with a
  per-rule report and an overall score; the rules are described in chalicelib/agents/data_quality.py.
Unknown keys are refused either way. `jsonschema` is imported inside `run` to keep it off the cold-start path of
other consumers.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from chalicelib.agents.base import Agent, AgentContext, AgentOutput
from chalicelib.agents.modes import ModeInput
from chalicelib.agents.schema_limits import (
    MAX_DEPTH,
    MAX_ERRORS,
    MAX_EXPANDED_SUBSCHEMAS,
    MAX_MESSAGE,
    MAX_PAYLOAD_BYTES,
    MAX_REF_DEPTH,
    MAX_REFS,
    MAX_SCHEMA_BYTES,
    MAX_STEPS,
    SchemaLimitError,
    StepBudgetExceeded,
    check_schema_input,
)
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


class JsonSchemaCheck(BaseModel):
    # `schema` shadows a (deprecated) BaseModel attribute, so the field has
    # another name; the alias keeps the public key, and serialising by alias
    # keeps `validate_input`'s normalised input_data readable by this model.
    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    json_schema: dict[str, Any] = Field(
        alias="schema", description=f"The JSON Schema to validate against: at most {MAX_SCHEMA_BYTES} bytes of JSON, "
        f"{MAX_DEPTH} levels deep, {MAX_REFS} $refs, $ref chains {MAX_REF_DEPTH} deep and "
        f"{MAX_EXPANDED_SUBSCHEMAS} subschemas with local $refs expanded; `pattern`s must compile on RE2.",
        json_schema_extra={"x-max-bytes": MAX_SCHEMA_BYTES, "x-max-depth": MAX_DEPTH})
    # `Field(...)` makes the key required while still accepting JSON `null`.
    payload: Any = Field(..., description=f"The JSON value to validate: at most {MAX_PAYLOAD_BYTES} bytes of JSON, "
                         f"{MAX_DEPTH} levels deep.",
                         json_schema_extra={"x-max-bytes": MAX_PAYLOAD_BYTES, "x-max-depth": MAX_DEPTH})

    @model_validator(mode="after")
    def _bounded(self) -> JsonSchemaCheck:
        try:
            check_schema_input(self.json_schema, self.payload)
        except SchemaLimitError as exc:
            where = f" (at {exc.pointer})" if exc.pointer is not None else ""
            raise ValueError(f"{exc}{where}") from exc
        return self


FieldPath = Annotated[str, Field(min_length=1, max_length=200)]
#: data-quality work is records x fields read per record (about 1-2 million reads a second, measured).
MAX_FIELD_READS_PER_RECORD = 200
MAX_FIELD_READS = 2_000_000
FieldType = Literal["string", "integer", "number", "boolean", "object", "array", "null"]
Bound = int | float | str | None


#: one field, or a tuple of fields; tagged so an error names which of the two the value was read as.
UniqueKey = Annotated[
    Annotated[FieldPath, Tag("field")] | Annotated[list[FieldPath], Field(min_length=1, max_length=10), Tag("fields")],
    Discriminator(lambda v: "fields" if isinstance(v, list) else "field"),
]


class Range(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min: Bound = None
    max: Bound = None

    @model_validator(mode="after")
    def _bounds_make_sense(self) -> Range:
        given = [b for b in (self.min, self.max) if b is not None]
        if not given:
            raise ValueError("a range needs min, max or both")
        if len({isinstance(b, str) for b in given}) > 1:
            raise ValueError("min and max must both be numbers or both be strings")
        if len(given) == 2 and given[0] > given[1]:  # type: ignore[operator]
            raise ValueError("min must not be greater than max")
        return self


class DataQualityRules(BaseModel):
    model_config = ConfigDict(extra="forbid")

    required: list[FieldPath] = Field(default_factory=list, description="Fields that must be present and not null.")
    types: dict[FieldPath, FieldType] = Field(default_factory=dict, description="JSON type per field.")
    ranges: dict[FieldPath, Range] = Field(default_factory=dict, description="Inclusive min/max per field.")
    unique: list[UniqueKey] = Field(default_factory=list,
                                    description="Fields, or tuples of fields, whose values must not repeat.")
    max_null_ratio: dict[FieldPath, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=dict, description="Highest share of records where the field may be missing or null.")

    @model_validator(mode="after")
    def _at_least_one_rule(self) -> DataQualityRules:
        if not (self.required or self.types or self.ranges or self.unique or self.max_null_ratio):
            raise ValueError("rules must name at least one of required, types, ranges, unique, max_null_ratio")
        if self.field_reads() > MAX_FIELD_READS_PER_RECORD:
            raise ValueError(f"rules read {self.field_reads()} fields of each record; at most "
                             f"{MAX_FIELD_READS_PER_RECORD} are accepted")
        return self

    def field_reads(self) -> int:
        """Fields read per record: the work is records x this (a tuple key reads each of its fields)."""
        unique = sum(1 if isinstance(key, str) else len(key) for key in self.unique)
        return len(self.required) + len(self.types) + len(self.ranges) + unique + len(self.max_null_ratio)


#: The data-quality shape's example, carried by its JSON Schema (`example_input` shows the JSON Schema shape).
DATA_QUALITY_EXAMPLE: dict[str, Any] = {
    "records": [{"id": 1, "email": "ana@example.com", "age": 34}, {"id": 2, "email": None, "age": 212},
                {"id": 2, "email": "li@example.com", "age": "41"}],
    "rules": {"required": ["id", "email"], "types": {"age": "integer"}, "ranges": {"age": {"min": 0, "max": 130}},
              "unique": ["id"], "max_null_ratio": {"email": 0.1}},
}


class DataQualityCheck(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [DATA_QUALITY_EXAMPLE]})

    records: list[dict[str, Any]] = Field(min_length=1, max_length=100_000, description=(
        f"The records to check; records x fields the rules read must stay under {MAX_FIELD_READS}."))
    rules: DataQualityRules = Field(description=f"At most {MAX_FIELD_READS_PER_RECORD} field reads per record.")

    @model_validator(mode="after")
    def _bounded(self) -> DataQualityCheck:
        reads = len(self.records) * self.rules.field_reads()
        if reads > MAX_FIELD_READS:
            raise ValueError(f"{len(self.records)} records x {self.rules.field_reads()} fields per record is "
                             f"{reads} field reads; at most {MAX_FIELD_READS} are accepted (split the records)")
        return self


def _pick_shape(value: Any) -> str:
    if isinstance(value, dict):
        return "records" if "records" in value else "schema"
    return "records" if isinstance(value, DataQualityCheck) else "schema"


class ValidationInput(ModeInput[Annotated[
    Annotated[JsonSchemaCheck, Tag("schema")] | Annotated[DataQualityCheck, Tag("records")],
    Discriminator(_pick_shape),
]]):
    """`{"schema", "payload"}` or `{"records", "rules"}`; a mix of the two is refused as unknown keys."""


class ValidationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_steps: int = Field(default=MAX_STEPS, ge=1000, le=MAX_STEPS,
                           description="Keyword applications one validation may take (the platform's cap is "
                                       "the default); past it the task fails with AGENT_INPUT_INVALID.")


class ValidationAgent(Agent):
    type = "validation"
    Input = ValidationInput
    Config = ValidationConfig
    isolated = True
    description = ("Validates a JSON payload against a JSON Schema and reports every violation, or checks a list of "
                   "records against data-quality rules (required, types, ranges, unique, null ratios) and scores it.")
    example_input = {
        "schema": {"type": "object", "required": ["id", "qty"],
                   "properties": {"id": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}}},
        "payload": {"id": "A-1", "qty": 0},
    }
    capabilities = ("json-schema", "draft-2020-12", "draft-2019-09", "draft-7", "draft-6", "draft-4", "format-checking",
                    "data-quality", "required-fields", "types", "ranges", "uniqueness", "null-ratio")

    def run(self, data: BaseModel, config: Mapping[str, Any], ctx: AgentContext | None = None) -> AgentOutput:
        assert isinstance(data, ValidationInput)
        check = data.root
        if isinstance(check, DataQualityCheck):
            return _data_quality(check)
        assert isinstance(check, JsonSchemaCheck)
        started = time.perf_counter()
        validator = SCHEMA_CACHE.validator(check.json_schema)
        errors, truncated = _collect_errors(validator, check.payload, ValidationConfig.model_validate(config).max_steps)
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        return AgentOutput(
            output={
                "valid": not errors,
                "error_count": len(errors),
                "errors": errors,
                # True when more than MAX_ERRORS violations exist: `errors` holds the first ones found, sorted.
                "errors_truncated": truncated,
                "validator": type(validator).__name__,
            },
            metrics={"duration_ms": duration_ms, "violations": len(errors)},
        )


def _data_quality(check: DataQualityCheck) -> AgentOutput:
    from chalicelib.agents.data_quality import check_records

    started = time.perf_counter()
    report = check_records(check.records, check.rules)
    duration_ms = round((time.perf_counter() - started) * 1000, 3)
    violations = sum(rule["violations"] for rule in report["rules"])
    return AgentOutput(output=report, metrics={"duration_ms": duration_ms, "records": report["records"],
                                               "rules": report["summary"]["checked"], "violations": violations})


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


class SchemaCache:
    """Checked validators by schema (a bounded LRU): a schema is meta-validated and its validator built once.

    Meta-validating the user's schema (`check_schema`) was 86% of a small validation task; tasks of one user
    mostly share a schema. The key is a digest of the schema's JSON text in its own key order (jsonschema walks
    keywords in that order, so two orderings may report the first MAX_ERRORS violations differently). A schema
    that fails the check is not cached: it raises every time. Validators are immutable and hold no per-run state
    (the step budget lives in a ContextVar), so one instance serves every task and thread.
    """

    def __init__(self, maxsize: int = 128) -> None:
        #: 0 turns caching off (bench/consumer_vs_celery.py's plain worker).
        self.maxsize = maxsize
        self._entries: OrderedDict[bytes, Validator] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def validator(self, schema: dict[str, Any]) -> Validator:
        if self.maxsize <= 0:
            return _build_validator(schema)
        try:
            text = json.dumps(schema, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError):  # not plain JSON (a caller outside the task path): checked every time
            return _build_validator(schema)
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=20).digest()
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return found
        # Built from its own copy (the cached validator must not share a dict with a task's input), outside the
        # lock: a slow check never blocks tasks of other schemas.
        validator = _build_validator(json.loads(text))
        with self._lock:
            self.misses += 1
            self._entries[key] = validator
            self._entries.move_to_end(key)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
        return validator

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


#: one per process: a forked (isolated) run reads the parent's entries; what it adds dies with it.
SCHEMA_CACHE = SchemaCache()


def _build_validator(schema: dict[str, Any]) -> Validator:
    import referencing
    from jsonschema.exceptions import SchemaError

    from chalicelib.agents.schema_limits import bounded_validator_class, format_checker

    draft: Any = _validator_class(schema)
    cls = bounded_validator_class(draft)
    try:
        cls.check_schema(schema, format_checker=format_checker(draft))
    except SchemaError as exc:
        raise AgentInputError(
            f"the schema is not a valid {cls.__name__.removesuffix('Validator')} JSON Schema: {exc.message}",
            # In meta-validation the user's schema is the instance, so the
            # error's instance path is where in *their* schema the problem is.
            {"schema_path": json_pointer(exc.absolute_path), "reason": exc.message},
        ) from exc
    # An empty registry (combined by jsonschema with the bundled meta-schemas)
    # means a remote `$ref` is unresolvable instead of fetched over the network.
    return cls(schema, registry=referencing.Registry(), format_checker=format_checker(draft))


def _collect_errors(validator: Validator, payload: Any, max_steps: int) -> tuple[list[dict[str, Any]], bool]:
    """The first MAX_ERRORS violations (sorted) and whether there were more; the step budget bounds the work."""
    from itertools import islice

    from referencing.exceptions import Unresolvable

    from chalicelib.agents.schema_limits import end_budget, start_budget

    token = start_budget(max_steps)
    try:
        found = list(islice(validator.iter_errors(payload), MAX_ERRORS + 1))
    except StepBudgetExceeded as exc:
        raise AgentInputError(
            f"validating this payload against this schema takes more than {max_steps} keyword applications",
            {"schema_path": None, "reason": "step budget exceeded", "max_steps": max_steps},
        ) from exc
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
    finally:
        end_budget(token)
    truncated = len(found) > MAX_ERRORS
    found = sorted(found[:MAX_ERRORS], key=_error_sort_key)
    return [
        {
            "path": json_pointer(err.absolute_path),
            "message": err.message if len(err.message) <= MAX_MESSAGE else err.message[:MAX_MESSAGE] + "...",
            "validator": str(err.validator),
            "schema_path": json_pointer(err.absolute_schema_path),
        }
        for err in found
    ], truncated


def _error_sort_key(err: SchemaViolation) -> tuple[Any, ...]:
    return (
        _path_sort_key(err.absolute_path),
        _path_sort_key(err.absolute_schema_path),
        err.message,
    )
