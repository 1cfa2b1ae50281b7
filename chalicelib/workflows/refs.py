"""References inside a workflow definition, and `when` conditions (docs/workflows.md, "References").

A string value is a reference iff it starts with `$.`; the whole string is the reference (no interpolation):

    $.input                         the run's input            $.input.<path>
    $.steps.<step_id>.output        an upstream step's output  $.steps.<step_id>.output.<path>
    $.item                          the current for_each item  $.item.<path>   (a for_each step's input_data only)

`<path>` is dot-separated segments of `[A-Za-z0-9_-]+`; an all-digit segment indexes an array (and is an
ordinary key when the value there is an object). A literal string that starts with `$` signs followed by a
dot is written with one more `$`: `"$$.5"` is the literal `"$.5"`, `"$$$.x"` the literal `"$$.x"`.

`declared` tells what a workflow's input_schema says about an `$.input…` location (validate.py's check).
Nothing here evaluates anything but these lookups; every walk is linear in the size of the value walked
(values are JsonObjects, already bounded in size and depth by the request models).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from chalicelib.workflows.definition import Condition

Root = Literal["input", "steps", "item"]

_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
#: a string that starts with one or more `$` then a dot: one `$` is a reference, more is an escaped literal.
_DOLLARS = re.compile(r"^(\$+)\.")


class MalformedReferenceError(ValueError):
    """A string starting with `$.` that is not one of the reference forms."""

    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        self.reason = reason
        super().__init__(f"malformed reference {_clip(text)!r}: {reason}")


@dataclass(frozen=True)
class Ref:
    root: Root
    path: tuple[str, ...] = ()
    #: root "steps" only: the step whose output is read.
    step_id: str | None = None

    @property
    def text(self) -> str:
        head = f"$.steps.{self.step_id}.output" if self.root == "steps" else f"$.{self.root}"
        return ".".join((head, *self.path))

    def __str__(self) -> str:
        return self.text


class UnresolvedReferenceError(LookupError):
    """At run time, a reference names something that does not exist (a missing key, index or output)."""

    def __init__(self, pointer: str, ref: Ref) -> None:
        self.pointer = pointer
        self.ref = ref
        where = f" at {pointer}" if pointer else ""
        super().__init__(f"reference {ref.text!r}{where} does not resolve")


class _Missing:
    """What a path that does not resolve yields (None is a value: JSON null)."""

    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()


def _clip(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "..."


def is_escaped(text: str) -> bool:
    """A literal written with a doubled `$` (`"$$.x"` means `"$.x"`)."""
    m = _DOLLARS.match(text)
    return m is not None and len(m.group(1)) > 1


def unescape(text: str) -> str:
    """The literal an escaped string stands for; other strings are returned as they are."""
    return text[1:] if is_escaped(text) else text


def looks_like_reference(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("$.")


def parse(text: Any) -> Ref | None:
    """The reference `text` is, or None for anything that is not one (non-strings, literals, "$$." escapes).

    Raises MalformedReferenceError (a ValueError) for a string that starts with `$.` but is not a reference.
    """
    if not looks_like_reference(text):
        return None
    parts = text[2:].split(".")
    for part in parts:
        if not _SEGMENT.fullmatch(part):
            shown = "an empty segment" if part == "" else f"segment {_clip(part)!r}"
            raise MalformedReferenceError(text, f"{shown} is not [A-Za-z0-9_-]+ (segments are separated by "
                                                f"single dots)")
    root = parts[0]
    if root in ("input", "item"):
        return Ref(root=root, path=tuple(parts[1:]))  # type: ignore[arg-type]
    if root == "steps":
        if len(parts) < 3 or parts[2] != "output":
            raise MalformedReferenceError(text, "expected $.steps.<step_id>.output or "
                                                "$.steps.<step_id>.output.<path>")
        return Ref(root="steps", step_id=parts[1], path=tuple(parts[3:]))
    raise MalformedReferenceError(text, "expected $.input…, $.steps.<step_id>.output… or $.item… (write a literal "
                                        "string starting with '$.' as '$$.')")


def _escape_token(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def strings(value: Any, pointer: str = "") -> Iterator[tuple[str, str]]:
    """Every string that looks like a reference in a nested value, with its JSON pointer within `value`.

    Iterative (no recursion limit), each node visited once.
    """
    stack: list[tuple[str, Any]] = [(pointer, value)]
    while stack:
        here, node = stack.pop()
        if isinstance(node, dict):
            stack.extend((f"{here}/{_escape_token(str(k))}", v) for k, v in reversed(list(node.items())))
        elif isinstance(node, list):
            stack.extend((f"{here}/{i}", v) for i, v in reversed(list(enumerate(node))))
        elif looks_like_reference(node):
            yield here, node


def references(value: Any) -> Iterator[tuple[str, Ref]]:
    """Every reference in a nested value, in document order, with its JSON pointer within `value`.

    Raises MalformedReferenceError at the first malformed one (validate.py reports all of them).
    """
    for pointer, text in strings(value):
        ref = parse(text)
        assert ref is not None  # strings() yields only "$."-strings, which parse to a Ref or raise
        yield pointer, ref


def lookup(base: Any, path: tuple[str, ...]) -> Any:
    """The value at `path` under `base`, or the `_MISSING` sentinel."""
    node = base
    for segment in path:
        if isinstance(node, dict):
            if segment not in node:
                return _MISSING
            node = node[segment]
        elif isinstance(node, list) and segment.isdigit() and (segment == "0" or not segment.startswith("0")):
            index = int(segment)
            if index >= len(node):
                return _MISSING
            node = node[index]
        else:
            return _MISSING
    return node


class _Resolver:
    def __init__(self, run_input: Any, output_of: Callable[[str], Any], item: Any) -> None:
        self.run_input = run_input
        self.output_of = output_of
        self.item = item
        self._outputs: dict[str, Any] = {}  # each step's output is fetched once, however often it is referenced

    def value(self, ref: Ref) -> Any:
        if ref.root == "input":
            base = self.run_input
        elif ref.root == "item":
            base = self.item
        else:
            assert ref.step_id is not None
            if ref.step_id not in self._outputs:
                try:
                    self._outputs[ref.step_id] = self.output_of(ref.step_id)
                except LookupError:
                    self._outputs[ref.step_id] = _MISSING
            base = self._outputs[ref.step_id]
        if base is _MISSING:
            return _MISSING
        return lookup(base, ref.path)

    def one(self, pointer: str, ref: Ref) -> Any:
        found = self.value(ref)
        if found is _MISSING:
            raise UnresolvedReferenceError(pointer, ref)
        return found


def resolve(value: Any, *, run_input: Any, output_of: Callable[[str], Any], item: Any = _MISSING) -> Any:
    """`value` with every reference replaced by what it names, and every `$$.` literal unescaped.

    `output_of(step_id)` returns a step's output (raise LookupError for a step with none); it is called at
    most once per step. `item` is the current for_each item (omit it outside a for_each: `$.item` then does
    not resolve). Raises UnresolvedReferenceError(pointer, ref) for the first reference that does not
    resolve, MalformedReferenceError for a malformed one. Resolved values are shared, not copied.
    """
    resolver = _Resolver(run_input, output_of, item)
    return _rebuild(value, "", resolver)


def _rebuild(value: Any, pointer: str, resolver: _Resolver) -> Any:
    # Recursive: depth is bounded by JsonObject's depth limit, far below Python's recursion limit.
    if isinstance(value, dict):
        return {k: _rebuild(v, f"{pointer}/{_escape_token(str(k))}", resolver) for k, v in value.items()}
    if isinstance(value, list):
        return [_rebuild(v, f"{pointer}/{i}", resolver) for i, v in enumerate(value)]
    if isinstance(value, str):
        ref = parse(value)
        if ref is not None:
            return resolver.one(pointer, ref)
        return unescape(value)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: 1 == 1.0, but true != 1 and false != 0 (unlike Python's ==)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def holds(condition: Condition, *, run_input: Any, output_of: Callable[[str], Any]) -> bool:
    """Whether a `when` condition holds: every operator given must hold.

    equals / not_equals: JSON equality (a missing value equals nothing, so not_equals holds for it);
    exists: true holds iff the path resolves (to anything, null included), false iff it does not;
    gt / lt: the value is a number (not a boolean) strictly greater / less; missing or non-number -> false.
    """
    ref = parse(condition.path)
    if ref is None:
        raise MalformedReferenceError(condition.path, "a condition's path must be a reference")
    found = _Resolver(run_input, output_of, _MISSING).value(ref)
    missing = found is _MISSING
    given = condition.model_fields_set - {"path"}
    if "exists" in given and condition.exists is not None and condition.exists == missing:
        return False
    if "equals" in given and (missing or not json_equal(found, condition.equals)):
        return False
    if "not_equals" in given and not missing and json_equal(found, condition.not_equals):
        return False
    if "gt" in given and condition.gt is not None and not (_is_number(found) and found > condition.gt):
        return False
    if "lt" in given and condition.lt is not None and not (_is_number(found) and found < condition.lt):
        return False
    return True


#: keywords whose effect on a location this walk does not model: where one appears, the schema "does not say".
_OPAQUE = frozenset({"$ref", "$dynamicRef", "anyOf", "oneOf", "allOf", "not", "if", "patternProperties",
                     "dependentSchemas", "unevaluatedProperties", "prefixItems", "propertyNames"})


def declared(schema: Any, path: tuple[str, ...]) -> tuple[str, set[str]]:
    """What a run input's JSON Schema says about `$.input.<path>`: ("absent", _) it can never exist there;
    ("known", types) the JSON types its value may have (empty: any; "integer" counts as "number").

    Only certain conclusions: `type`, `properties`, `additionalProperties` and `items` are followed; anything
    else the walk does not model (or a location without a `type` below the top) answers ("known", set()).
    """
    node, types = schema, {"object"}  # a run's input is always a JSON object
    for segment in path:
        if node is False:
            return "absent", set()
        if not isinstance(node, dict) or _OPAQUE & node.keys():
            return "known", set()
        types = types or _types(node)
        if types == {"object"}:
            props = node.get("properties", {})
            extra = node.get("additionalProperties", True)
            if isinstance(props, dict) and segment in props:
                node = props[segment]
            elif extra is False:
                return "absent", set()
            else:
                node = extra
        elif types == {"array"}:
            if not segment.isdigit():
                return "absent", set()
            node = node.get("items", True)
        elif types and not types & {"object", "array"}:
            return "absent", set()  # a path into a string, number, boolean or null
        else:
            return "known", set()
        types = set()
    if node is False:
        return "absent", set()
    return "known", (types or _types(node)) if isinstance(node, dict) and not _OPAQUE & node.keys() else set()


def _types(node: dict[str, Any]) -> set[str]:
    declared = node.get("type")
    names = {declared} if isinstance(declared, str) else set(declared) if isinstance(declared, list) else set()
    return {"number" if t == "integer" else t for t in names if isinstance(t, str)}
