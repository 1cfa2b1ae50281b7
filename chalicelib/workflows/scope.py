"""The runtime's view of references and conditions: the calls the consumers make, over
`chalicelib.workflows.refs` (the syntax, lookups and `when` semantics live there, shared with validation).

A scope is `{"input": run input, "steps": {"<step_id>": {"output": ..., "status": ...}}, "item": ...}`
(`item` only inside a for_each), built from Postgres by `chalicelib.workflows.runstate.scope`.
"""

from __future__ import annotations

from typing import Any

from chalicelib.workflows import refs
from chalicelib.workflows.definition import Condition

_MISSING: Any = refs._MISSING


class ReferenceUnresolved(Exception):
    def __init__(self, reference: str, why: str) -> None:
        super().__init__(why)
        self.reference = reference


def _output_of(data: dict[str, Any]) -> Any:
    steps: dict[str, Any] = data.get("steps") or {}

    def output_of(step_id: str) -> Any:
        entry = steps[step_id]  # KeyError is a LookupError: the reference does not resolve
        if entry.get("output") is None and entry.get("status") != "succeeded":
            raise LookupError(step_id)  # a step with no output yet (skipped, pending)
        return entry.get("output")

    return output_of


def resolve(value: Any, data: dict[str, Any]) -> Any:
    """`value` with every reference replaced (refs.resolve); ReferenceUnresolved names the first that fails."""
    try:
        return refs.resolve(value, run_input=data.get("input"), output_of=_output_of(data),
                            item=data.get("item", _MISSING))
    except refs.UnresolvedReferenceError as exc:
        raise ReferenceUnresolved(exc.ref.text, str(exc)) from exc
    except refs.MalformedReferenceError as exc:
        raise ReferenceUnresolved(str(value)[:200], str(exc)) from exc


def lookup(reference: str, data: dict[str, Any]) -> Any:
    return resolve(reference, data)


def step_ids_in(value: Any) -> set[str]:
    """Step ids named by `$.steps.<id>…` references inside `value` (malformed ones name none)."""
    try:
        return {ref.step_id for _, ref in refs.references(value) if ref.root == "steps" and ref.step_id}
    except refs.MalformedReferenceError:
        return set()


def evaluate(condition: Condition, data: dict[str, Any]) -> bool:
    return refs.holds(condition, run_input=data.get("input"), output_of=_output_of(data))
