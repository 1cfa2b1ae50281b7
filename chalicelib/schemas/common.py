"""Base models and the shared types every stored or forwarded value goes through.

Postgres cannot store `\\u0000` (text or jsonb) or a lone surrogate (not UTF-8), and jsonb has no NaN or
Infinity: each of those used to reach the database and come back as a 500. The types below refuse them at
the schema layer, as a 422 whose `loc` is the path to the offending value:

- `Name`: single-line identifiers shown in lists, logs and alert subjects (agent names, titles, usernames,
  capabilities): no control character at all (C0, DEL, C1) and no lone surrogate.
- `Text`: free text (descriptions, comments, messages, filters): no C0 control except tab, LF and CR.
- `JsonObject`: a JSON object (metadata, config, input_data, output_data, details): every key and string
  value is `Text`, every number finite, nesting at most `MAX_JSON_DEPTH` deep.
- `FilterDatetime`: a datetime that stays representable in UTC (a `+14:00` offset on 0001-01-01 does not).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, GetCoreSchemaHandler, GetJsonSchemaHandler, PrivateAttr
from pydantic import ValidationError as PydanticValidationError
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, InitErrorDetails, PydanticCustomError, core_schema

T = TypeVar("T")

#: JSON nesting the API accepts in a request body and in any JSON field (objects and arrays both count).
MAX_JSON_DEPTH = 64

_TEXT_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")
_NAME_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _describe(char: str) -> str:
    if "\ud800" <= char <= "\udfff":
        return f"a lone surrogate (U+{ord(char):04X}), which is not valid Unicode text"
    return f"a control character (U+{ord(char):04X})"


def _text_error(value: str, forbidden: re.Pattern[str]) -> PydanticCustomError | None:
    found = forbidden.search(value)
    if found is None:
        return None
    return PydanticCustomError("forbidden_character", "must not contain {what}",
                               {"what": _describe(found.group()), "position": found.start()})


def check_text(value: str) -> str:
    error = _text_error(value, _TEXT_FORBIDDEN)
    if error is not None:
        raise error
    return value


def is_name(value: str) -> bool:
    """True when `value` passes `Name` (for code that must decide before a model validates it)."""
    return _NAME_FORBIDDEN.search(value) is None


def check_name(value: str) -> str:
    error = _text_error(value, _NAME_FORBIDDEN)
    if error is not None:
        raise error
    return value


def check_unicode(value: str) -> str:
    """Secrets (passwords): any character, but it must be encodable as UTF-8."""
    error = _text_error(value, _SURROGATE)
    if error is not None:
        raise error
    return value


def _json_problems(root: Any) -> list[InitErrorDetails]:
    """Every value Postgres' jsonb cannot hold, with its path; iterative (no recursion on deep input)."""
    problems: list[InitErrorDetails] = []
    stack: list[tuple[Any, tuple[str | int, ...], int]] = [(root, (), 1)]
    while stack and len(problems) < 20:
        value, path, depth = stack.pop()
        if isinstance(value, dict | list) and depth > MAX_JSON_DEPTH:  # only reachable from non-HTTP callers
            problems.append(InitErrorDetails(type=PydanticCustomError(
                "json_too_deep", "nested more than {max_depth} levels deep", {"max_depth": MAX_JSON_DEPTH}),
                loc=path, input="..."))
        elif isinstance(value, dict):
            for key, item in value.items():
                key_error = _text_error(key, _TEXT_FORBIDDEN) if isinstance(key, str) else None
                if key_error is not None:  # the key is the problem; name the object that holds it
                    problems.append(InitErrorDetails(type=key_error, loc=path, input=key))
                stack.append((item, (*path, str(key)), depth + 1))
        elif isinstance(value, list):
            stack.extend((item, (*path, i), depth + 1) for i, item in enumerate(value))
        elif isinstance(value, str):
            error = _text_error(value, _TEXT_FORBIDDEN)
            if error is not None:
                problems.append(InitErrorDetails(type=error, loc=path, input=value[:100]))
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(InitErrorDetails(type=PydanticCustomError(
                "finite_number", "must be a finite number (JSON has no NaN or Infinity)"), loc=path, input=value))
    return problems


#: in `json.dumps(..., ensure_ascii=True)` output, the escapes a forbidden `Text` character turns into: \b, \f,
#: \u0000-\u001f, a surrogate half. A literal backslash or a paired surrogate (emoji) also matches: then the
#: Python walk decides, so a match costs time, never a wrong answer.
_DUMPED_SUSPECT = re.compile(r"\\(?:[bf]|u00[01]|ud[89a-f])")


def _looks_clean(value: Any) -> bool:
    """One C-speed pass over the whole value (no per-node Python work): True when nothing can be wrong."""
    try:
        dumped = json.dumps(value, ensure_ascii=True, allow_nan=False, check_circular=False)
    except (ValueError, TypeError, RecursionError):  # NaN/Infinity, a non-JSON value, absurd depth
        return False
    return _DUMPED_SUSPECT.search(dumped) is None


def check_json(value: T) -> T:
    if _looks_clean(value):
        return value
    problems = _json_problems(value)  # the slow walk, only to name the bad values' paths
    if problems:
        raise PydanticValidationError.from_exception_data("json", problems)
    return value


def check_utc_representable(value: datetime) -> datetime:
    try:
        if value.tzinfo is not None:
            value.astimezone(timezone.utc)
    except OverflowError as exc:
        raise PydanticCustomError("datetime_range", "is out of range once converted to UTC") from exc
    return value


class _Chars:
    """Annotated metadata: the character check, also stated in the JSON Schema as a `pattern`.

    Put it after any `StringConstraints` (length errors then read as usual):
    `Annotated[str, StringConstraints(max_length=200), NAME_CHARS]`.
    """

    def __init__(self, check: Callable[[str], str], pattern: str | None) -> None:
        self.check, self.pattern = check, pattern

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        result = handler(schema)
        if self.pattern is not None and result.get("type") == "string":
            result.setdefault("pattern", self.pattern)  # a stricter pattern of the field's own stays
        return result


#: the same rules as JSON Schema patterns (ECMA-262 and Python agree on `\xNN` escapes)
NAME_PATTERN = "^[^\\x00-\\x1f\\x7f-\\x9f]*$"
TEXT_PATTERN = "^[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f]*$"
NAME_CHARS = _Chars(check_name, NAME_PATTERN)
TEXT_CHARS = _Chars(check_text, TEXT_PATTERN)
UNICODE_CHARS = _Chars(check_unicode, None)

Name = Annotated[str, NAME_CHARS]
Text = Annotated[str, TEXT_CHARS]
JsonObject = Annotated[dict[str, Any], AfterValidator(check_json)]
FilterDatetime = Annotated[datetime, AfterValidator(check_utc_representable)]


class StrictModel(BaseModel):
    """Request bodies: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class PublicModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class RenderedOnce(PublicModel):
    """A response model that is never modified once built (a final task as cached): its JSON text is made
    once and reused, so a cached read does not serialize the same task again (`chalicelib.api.http.ok`)."""

    _json_text: str | None = PrivateAttr(default=None)

    def json_text(self) -> str:
        if self._json_text is None:  # Chalice's own encoding of a dict body: compact separators
            self._json_text = json.dumps(self.model_dump(mode="json"), separators=(",", ":"))
        return self._json_text


class Page(PublicModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, object]
    timestamp: datetime


class ErrorEnvelope(BaseModel):
    error: ErrorBody
