"""The runtime's view of references and conditions: the four calls the consumers make.

The reference syntax itself belongs to `chalicelib.workflows.refs` (the compiler's module, which also
validates references at create time); this adapter is what the runtime calls, so the consumers do not
depend on how refs spells its helpers. Until refs is on the branch it walks the scope itself with the
same syntax: `$.input.<path>`, `$.steps.<step_id>.output.<path>`, `$.item.<path>` (a path is dot-separated
keys; a segment of digits indexes an array).
"""

from __future__ import annotations

from typing import Any

from chalicelib.workflows.definition import Condition

_MISSING = object()


class ReferenceUnresolved(Exception):
    def __init__(self, reference: str, why: str) -> None:
        super().__init__(f"the reference {reference!r} cannot be resolved: {why}")
        self.reference = reference


def is_reference(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("$.")


def _lookup(reference: str, data: dict[str, Any]) -> Any:
    parts = reference[2:].split(".")
    current: Any = data
    for part in parts:
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return _MISSING
    return current


def lookup(reference: str, data: dict[str, Any]) -> Any:
    """The value at a reference; ReferenceUnresolved when the path is not there."""
    value = _lookup(reference, data)
    if value is _MISSING:
        raise ReferenceUnresolved(reference, "nothing at that path")
    return value


def resolve(value: Any, data: dict[str, Any]) -> Any:
    """`value` with every whole-string reference inside it replaced (recursively through objects/arrays)."""
    if is_reference(value):
        return lookup(value, data)
    if isinstance(value, str):
        from chalicelib.workflows.refs import unescape

        return unescape(value)  # `$$.x` is the literal `$.x` (an orchestrator plan's inputs are escaped so)
    if isinstance(value, dict):
        return {k: resolve(v, data) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, data) for v in value]
    return value


def step_ids_in(value: Any) -> set[str]:
    """Step ids named by `$.steps.<id>…` references inside `value`."""
    if is_reference(value):
        parts = value[2:].split(".")
        return {parts[1]} if len(parts) > 1 and parts[0] == "steps" else set()
    if isinstance(value, dict):
        return set().union(*(step_ids_in(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(step_ids_in(v) for v in value)) if value else set()
    return set()


def evaluate(condition: Condition, data: dict[str, Any]) -> bool:
    """Every operator given must pass; a missing value passes only `exists: false` and `not_equals`."""
    value = _lookup(condition.path, data)
    given = condition.model_fields_set - {"path"}
    checks = []
    if "exists" in given:
        checks.append((value is not _MISSING) == bool(condition.exists))
    if "equals" in given:
        checks.append(value is not _MISSING and value == condition.equals)
    if "not_equals" in given:
        checks.append(value is _MISSING or value != condition.not_equals)
    for op in ("gt", "lt"):
        if op in given:
            bound = getattr(condition, op)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            checks.append(number and (value > bound if op == "gt" else value < bound))
    return all(checks)
