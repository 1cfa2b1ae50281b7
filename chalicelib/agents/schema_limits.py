"""Bounds on JSON Schema work, so a validation task costs time linear in what the user sent.

At `POST /tasks` (`check_schema_input`, run by the input model): the schema's and payload's JSON size and
nesting depth, the number of `$ref`s, how deep a chain of local `$ref`s goes and how large the schema is
with every local `$ref` expanded (a 1.3 KB chain of `allOf` pairs expands to millions of subschemas), and
every `pattern` / `patternProperties` key must compile on RE2 (chalicelib/agents/user_regex.py).

While validating (`bounded_validator_class`): every keyword application counts against a step budget (a
recursive `$ref` the static expansion cannot size is bounded here), `uniqueItems` hashes a canonical form
of each item instead of comparing every pair, and the caller stops collecting errors at `MAX_ERRORS`.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any
from urllib.parse import unquote

from chalicelib.agents.user_regex import UnsafePatternError, compile_user_pattern, is_valid_pattern, route_jsonschema

MAX_SCHEMA_BYTES = 64 * 1024
MAX_PAYLOAD_BYTES = 512 * 1024
MAX_DEPTH = 64
MAX_REFS = 500
MAX_REF_DEPTH = 32
#: subschemas in the schema with every local `$ref` replaced by its target (a recursive one counted once).
MAX_EXPANDED_SUBSCHEMAS = 20_000
#: keyword applications per validation: 40,000-100,000 a second on one core (measured), so 2-5 s at most.
MAX_STEPS = 200_000
MAX_ERRORS = 100
#: characters of one error message (jsonschema's messages quote the failing value).
MAX_MESSAGE = 500
#: keys whose values are data, not subschemas: a "pattern" inside an enum is not a pattern.
_DATA_KEYWORDS = frozenset({"enum", "const", "examples", "default"})


class SchemaLimitError(ValueError):
    """The schema or payload is beyond a limit; `reason` names it."""

    def __init__(self, message: str, pointer: str | None = None) -> None:
        super().__init__(message)
        self.pointer = pointer


class StepBudgetExceeded(Exception):  # noqa: N818 - an escape from deep inside jsonschema, not an error kind
    pass


def check_schema_input(schema: Any, payload: Any) -> None:
    texts = []
    for name, value, limit in (("schema", schema, MAX_SCHEMA_BYTES), ("payload", payload, MAX_PAYLOAD_BYTES)):
        if nesting_depth(value) > MAX_DEPTH:
            raise SchemaLimitError(f"the {name} is nested deeper than {MAX_DEPTH} levels")
        text = json.dumps(value, separators=(",", ":")).encode()
        if len(text) > limit:
            raise SchemaLimitError(f"the {name} is {len(text)} bytes of JSON; at most {limit} are accepted")
        texts.append(text)
    # The walks over the schema (patterns, $refs) depend on the schema alone: a schema that passed them once
    # passes again (the consumer re-validates every task's input; tasks of one user mostly share a schema).
    key = hashlib.blake2b(texts[0], digest_size=20).digest()
    if _PASSED.seen(key):
        return
    _check_patterns(schema)
    _check_refs(schema)
    _PASSED.add(key)


class _Passed:
    """A bounded set of schema digests that passed the schema walks (least recently seen dropped first)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._keys: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def seen(self, key: bytes) -> bool:
        with self._lock:
            if key not in self._keys:
                return False
            self._keys.move_to_end(key)
            return True

    def add(self, key: bytes) -> None:
        with self._lock:
            self._keys[key] = None
            while len(self._keys) > self.maxsize:
                self._keys.popitem(last=False)


_PASSED = _Passed(maxsize=512)


def nesting_depth(value: Any) -> int:
    """Depth of nested arrays/objects, without recursion (a deep value must not exhaust the stack here)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                return depth
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def _subschemas(schema: Any) -> Iterator[tuple[str, Any]]:
    """(JSON pointer, node) of every object in the schema outside data keywords, without recursion."""
    stack: list[tuple[str, Any]] = [("", schema)]
    while stack:
        pointer, node = stack.pop()
        if isinstance(node, dict):
            yield pointer, node
            stack.extend((f"{pointer}/{_escape(k)}", v) for k, v in node.items() if k not in _DATA_KEYWORDS)
        elif isinstance(node, list):
            stack.extend((f"{pointer}/{i}", v) for i, v in enumerate(node))


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _check_patterns(schema: Any) -> None:
    for pointer, node in _subschemas(schema):
        found = []
        if isinstance(node.get("pattern"), str):
            found.append((f"{pointer}/pattern", node["pattern"]))
        if isinstance(node.get("patternProperties"), dict):
            found += [(f"{pointer}/patternProperties/{_escape(k)}", k) for k in node["patternProperties"]]
        for where, pattern in found:
            try:
                compile_user_pattern(pattern)
            except UnsafePatternError as exc:
                raise SchemaLimitError(str(exc), where) from exc


def _check_refs(schema: Any) -> None:
    refs = {pointer: node["$ref"] for pointer, node in _subschemas(schema) if isinstance(node.get("$ref"), str)}
    if len(refs) > MAX_REFS:
        raise SchemaLimitError(f"the schema has {len(refs)} $refs; at most {MAX_REFS} are accepted")
    memo: dict[str, int] = {}

    def expanded(pointer: str, node: Any, chain: tuple[str, ...]) -> int:
        if len(chain) > MAX_REF_DEPTH:
            raise SchemaLimitError(f"a chain of $refs is deeper than {MAX_REF_DEPTH}", pointer)
        total = 0
        for inner, sub in _subschemas(node):
            total += 1
            ref = sub.get("$ref")
            target = _local_target(ref) if isinstance(ref, str) else None
            if target is None or target in chain:
                continue  # not local, or recursive: bounded at run time by the step budget
            if target not in memo:
                memo[target] = expanded(target, _resolve(schema, target), (*chain, target))
            total += memo[target]
            if total > MAX_EXPANDED_SUBSCHEMAS:
                raise SchemaLimitError(f"with its $refs expanded the schema has more than {MAX_EXPANDED_SUBSCHEMAS} "
                                       "subschemas (a chain of $refs used several times each)", pointer + inner)
        return total

    expanded("", schema, ("",))


def _local_target(ref: str | None) -> str | None:
    if ref is None or not ref.startswith("#") or (len(ref) > 1 and ref[1] != "/"):
        return None
    return unquote(ref[1:])


def _resolve(schema: Any, pointer: str) -> Any:
    node = schema
    for part in pointer.split("/")[1:]:
        key = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return None  # unresolvable: jsonschema reports it
    return node


# --- while validating -------------------------------------------------------------------------------------

_steps: contextvars.ContextVar[list[int]] = contextvars.ContextVar("schema_steps")


def start_budget(max_steps: int = MAX_STEPS) -> contextvars.Token[list[int]]:
    return _steps.set([max_steps])


def end_budget(token: contextvars.Token[list[int]]) -> None:
    _steps.reset(token)


def _counted(keyword: Callable[..., Any]) -> Callable[..., Any]:
    def apply(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        left = _steps.get(None)
        if left is not None:
            left[0] -= 1
            if left[0] < 0:
                raise StepBudgetExceeded
        return keyword(validator, value, instance, schema)

    return apply


def canonical(value: Any) -> Any:
    """A hashable form equal for JSON-equal values (3 == 3.0, key order ignored, true != 1), without recursion."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, int | float):
        return ("n", int(value) if isinstance(value, float) and value.is_integer() else value)
    return ("j", json.dumps(_normalised(value), sort_keys=True, separators=(",", ":")))


def _normalised(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _normalised(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalised(v) for v in value]
    return value


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[Any]:
    from jsonschema.exceptions import ValidationError  # type: ignore[import-untyped]

    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[Any] = set()
    for item in instance:
        key = canonical(item)
        if key in seen:
            yield ValidationError(f"{_short(instance)} has non-unique elements")
            return
        seen.add(key)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "..."


@cache
def bounded_validator_class(cls: Any) -> Any:
    """`cls` with every keyword counted, `uniqueItems` by hashing, and `format: regex` meaning RE2."""
    from jsonschema import validators

    route_jsonschema()
    keywords = {name: _counted(fn) for name, fn in cls.VALIDATORS.items()}
    if "uniqueItems" in keywords:
        keywords["uniqueItems"] = _counted(_unique_items)
    bounded: type[Any] = validators.extend(cls, keywords)
    bounded.__name__ = bounded.__qualname__ = cls.__name__  # reported as the draft's validator
    return bounded


@cache
def format_checker(cls: Any) -> Any:
    """The draft's format checker with `regex` checked by RE2 (so meta-validation refuses what RE2 cannot run)."""
    import copy

    checker = copy.copy(cls.FORMAT_CHECKER)
    checker.checkers = {**checker.checkers, "regex": (is_valid_pattern, (UnsafePatternError,))}
    return checker
