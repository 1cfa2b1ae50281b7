"""The reference syntax and `when` conditions (chalicelib.workflows.refs), as pure functions."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.workflows import refs
from chalicelib.workflows.definition import Condition
from chalicelib.workflows.refs import MalformedReferenceError, Ref, UnresolvedReferenceError

OUTPUTS: dict[str, Any] = {
    "fetch": {"items": [{"n": 1}, {"n": 2}], "count": 2, "flag": True, "0": "zero-key", "none": None},
    "score": {"value": 7.5},
}
RUN_INPUT = {"name": "ana", "tags": ["a", "b"], "nested": {"deep": {"x": 1}}}


def output_of(step_id: str) -> Any:
    return OUTPUTS[step_id]  # KeyError (a LookupError) for a step with no output


def resolve(value: Any, **kw: Any) -> Any:
    return refs.resolve(value, run_input=RUN_INPUT, output_of=output_of, **kw)


@pytest.mark.parametrize(("text", "expected"), [
    ("$.input", Ref("input")),
    ("$.input.name", Ref("input", ("name",))),
    ("$.input.tags.0", Ref("input", ("tags", "0"))),
    ("$.steps.fetch.output", Ref("steps", (), "fetch")),
    ("$.steps.fetch-2_x.output.items.1.n", Ref("steps", ("items", "1", "n"), "fetch-2_x")),
    ("$.item", Ref("item")),
    ("$.item.a-b.c_d", Ref("item", ("a-b", "c_d"))),
])
def test_parse_accepts_every_form_and_round_trips(text: str, expected: Ref) -> None:
    assert refs.parse(text) == expected
    assert expected.text == text


@pytest.mark.parametrize("value", ["plain", "", "$", "$x", "$$.input", "$$$.steps.a", " $.input", 3, None,
                                   ["$.input"], {"a": "$.input"}])
def test_parse_returns_none_for_non_references(value: Any) -> None:
    assert refs.parse(value) is None


@pytest.mark.parametrize(("text", "hint"), [
    ("$.", "empty segment"),
    ("$.input.", "empty segment"),
    ("$.input..x", "empty segment"),
    ("$.input.a b", "segment"),
    ("$.input.a[0]", "segment"),
    ("$.steps", "$.steps.<step_id>.output"),
    ("$.steps.a", "$.steps.<step_id>.output"),
    ("$.steps.a.result", "$.steps.<step_id>.output"),
    ("$.output", "expected $.input"),
    ("$.inputs.x", "expected $.input"),
    ("$.Input", "expected $.input"),
])
def test_parse_refuses_malformed_references_with_a_clear_message(text: str, hint: str) -> None:
    with pytest.raises(MalformedReferenceError) as err:
        refs.parse(text)
    assert isinstance(err.value, ValueError)
    assert hint in str(err.value)
    assert err.value.text == text


def test_references_walks_nested_values_with_json_pointers_in_document_order() -> None:
    value = {"a": "$.input.name", "b": [1, "$.steps.fetch.output", {"c/d": "$.item", "e~f": "$.input"}],
             "lit": "$$.input", "n": 5}
    assert list(refs.references(value)) == [
        ("/a", Ref("input", ("name",))),
        ("/b/1", Ref("steps", (), "fetch")),
        ("/b/2/c~1d", Ref("item")),
        ("/b/2/e~0f", Ref("input")),
    ]


def test_references_raises_on_a_malformed_one() -> None:
    with pytest.raises(MalformedReferenceError):
        list(refs.references({"a": ["$.nope"]}))


def test_resolve_replaces_references_at_any_depth_and_keeps_the_rest() -> None:
    value = {"who": "$.input.name", "first": "$.steps.fetch.output.items.0.n", "all": "$.steps.fetch.output.items",
             "list": ["$.input.tags.1", 3, {"deep": "$.input.nested.deep.x"}], "keep": "text", "num": 1.5,
             "none": None}
    assert resolve(value) == {"who": "ana", "first": 1, "all": [{"n": 1}, {"n": 2}],
                              "list": ["b", 3, {"deep": 1}], "keep": "text", "num": 1.5, "none": None}


def test_resolve_unescapes_literals_by_one_dollar() -> None:
    assert resolve({"a": "$$.input", "b": "$$$.x", "c": "$$", "d": "$5", "e": "a $.input"}) == \
        {"a": "$.input", "b": "$$.x", "c": "$$", "d": "$5", "e": "a $.input"}


def test_resolve_digit_segments_index_arrays_or_name_object_keys() -> None:
    assert resolve("$.steps.fetch.output.0") == "zero-key"
    assert resolve("$.input.tags.0") == "a"
    with pytest.raises(UnresolvedReferenceError):
        resolve("$.input.tags.00")  # no second spelling of index 0
    with pytest.raises(UnresolvedReferenceError):
        resolve("$.input.tags.2")


def test_resolve_whole_values_item_and_null() -> None:
    assert resolve({"x": "$.input"}) == {"x": RUN_INPUT}
    assert resolve({"x": "$.item.k"}, item={"k": [1]}) == {"x": [1]}
    assert resolve("$.item", item=None) is None
    assert resolve("$.steps.fetch.output.none") is None


@pytest.mark.parametrize(("value", "pointer"), [
    ({"a": "$.input.missing"}, "/a"),
    ({"a": ["x", "$.steps.fetch.output.items.9"]}, "/a/1"),
    ({"a": {"b": "$.steps.nostep.output"}}, "/a/b"),
    ({"a": "$.item"}, "/a"),  # no item given: outside a for_each
    ({"a": "$.input.name.x"}, "/a"),  # into a string
    ({"a": "$.steps.fetch.output.count.x"}, "/a"),
])
def test_resolve_raises_unresolved_with_the_pointer_and_the_ref(value: Any, pointer: str) -> None:
    with pytest.raises(UnresolvedReferenceError) as err:
        resolve(value)
    assert err.value.pointer == pointer
    assert err.value.ref.text in str(err.value)


def test_resolve_fetches_each_steps_output_once() -> None:
    calls: list[str] = []

    def counted(step_id: str) -> Any:
        calls.append(step_id)
        return OUTPUTS[step_id]

    refs.resolve({"a": ["$.steps.fetch.output.count"] * 50, "b": "$.steps.score.output"}, run_input={},
                 output_of=counted)
    assert sorted(calls) == ["fetch", "score"]


def test_resolve_never_evaluates_anything_else() -> None:
    value = {"a": "${Foo}", "b": "$[0]", "c": "{{input.name}}", "d": "$input.name", "e": "@.input"}
    assert resolve(value) == value
    for expression in ("$.input.name + 1", "$..x", "$.input[0]", "$.input.*"):
        with pytest.raises(MalformedReferenceError):
            resolve({"e": expression})


def test_resolve_is_linear_in_the_size_of_a_large_input() -> None:
    big = {f"k{i}": ["$.input.name", "text", {"x": "$.steps.fetch.output.count"}] for i in range(20_000)}
    out = resolve(big)
    assert out["k19999"] == ["ana", "text", {"x": 2}]


def cond(**kw: Any) -> Condition:
    return Condition.model_validate(kw)


def holds(**kw: Any) -> bool:
    return refs.holds(cond(**kw), run_input=RUN_INPUT, output_of=output_of)


@pytest.mark.parametrize(("kw", "expected"), [
    ({"path": "$.input.name", "equals": "ana"}, True),
    ({"path": "$.input.name", "equals": "bob"}, False),
    ({"path": "$.steps.fetch.output.count", "equals": 2.0}, True),  # JSON numbers: 2 == 2.0
    ({"path": "$.steps.fetch.output.flag", "equals": 1}, False),  # but true is not 1
    ({"path": "$.steps.fetch.output.count", "equals": True}, False),
    ({"path": "$.steps.fetch.output.items", "equals": [{"n": 1}, {"n": 2.0}]}, True),
    ({"path": "$.steps.fetch.output.none", "equals": None}, True),
    ({"path": "$.input.missing", "equals": None}, False),  # missing is not null
    ({"path": "$.input.name", "not_equals": "bob"}, True),
    ({"path": "$.input.name", "not_equals": "ana"}, False),
    ({"path": "$.input.missing", "not_equals": "ana"}, True),
    ({"path": "$.input.name", "exists": True}, True),
    ({"path": "$.steps.fetch.output.none", "exists": True}, True),
    ({"path": "$.input.missing", "exists": True}, False),
    ({"path": "$.input.missing", "exists": False}, True),
    ({"path": "$.steps.nostep.output", "exists": False}, True),
    ({"path": "$.input.name", "exists": False}, False),
    ({"path": "$.steps.score.output.value", "gt": 7}, True),
    ({"path": "$.steps.score.output.value", "gt": 7.5}, False),
    ({"path": "$.steps.score.output.value", "lt": 8}, True),
    ({"path": "$.steps.score.output.value", "lt": 7.5}, False),
    ({"path": "$.input.name", "gt": 0}, False),  # not a number
    ({"path": "$.steps.fetch.output.flag", "gt": 0}, False),  # a boolean is not a number
    ({"path": "$.input.missing", "lt": 100}, False),
    ({"path": "$.steps.score.output.value", "gt": 5, "lt": 10}, True),  # all operators must hold
    ({"path": "$.steps.score.output.value", "gt": 5, "lt": 6}, False),
    ({"path": "$.steps.score.output.value", "exists": True, "equals": 7.5, "not_equals": 1}, True),
])
def test_holds(kw: dict[str, Any], expected: bool) -> None:
    assert holds(**kw) is expected


@pytest.mark.parametrize(("schema", "path", "expected"), [
    ({}, (), ("known", {"object"})),  # a run's input is always an object
    ({}, ("a",), ("known", set())),
    ({"properties": {"n": {"type": "integer"}}}, ("n",), ("known", {"number"})),
    ({"properties": {"n": {"type": ["array", "null"]}}}, ("n",), ("known", {"array", "null"})),
    ({"additionalProperties": False}, ("a",), ("absent", set())),
    ({"additionalProperties": {"type": "string"}}, ("a", "b"), ("absent", set())),
    ({"properties": {"l": {"type": "array", "items": {"type": "boolean"}}}}, ("l", "7"), ("known", {"boolean"})),
    ({"properties": {"l": {"type": "array"}}}, ("l", "x"), ("absent", set())),
    ({"$ref": "#/$defs/x", "additionalProperties": False}, ("a",), ("known", set())),
    ({"properties": {"a": {"oneOf": [{"type": "string"}]}}}, ("a",), ("known", set())),
    ({"properties": {"a": False}}, ("a",), ("absent", set())),
])
def test_declared_concludes_only_what_the_schema_makes_certain(schema: dict[str, Any], path: tuple[str, ...],
                                                               expected: tuple[str, set[str]]) -> None:
    assert refs.declared(schema, path) == expected
