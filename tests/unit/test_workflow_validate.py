"""Whole-definition checks (chalicelib.workflows.validate): every violation at once, at precise paths."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from chalicelib.workflows import validate as v
from chalicelib.workflows.definition import WorkflowDefinition

ENGINES = ("word_count",)
AGENT = uuid.UUID("00000000-0000-4000-8000-000000000001")
LLM_AGENT = uuid.UUID("00000000-0000-4000-8000-000000000002")
BOSS = uuid.UUID("00000000-0000-4000-8000-000000000003")


def defn(*steps: dict[str, Any], **extra: Any) -> WorkflowDefinition:
    return WorkflowDefinition.model_validate({"steps": list(steps), **extra})


def found(d: WorkflowDefinition, agents: dict[str, str] | None = None) -> list[tuple[str, str]]:
    return [(x.path, x.code) for x in v.violations(d, step_agent_types=agents or {}, engines=ENGINES)]


def step(step_id: str, **kw: Any) -> dict[str, Any]:
    if not {"agent_type", "agent_id", "engine", "type"} & kw.keys():
        kw["agent_type"] = "editing"
        kw.setdefault("input_data", {"text": "hello"})
    return {"step_id": step_id, **kw}


def test_a_valid_pipeline_has_no_violations() -> None:
    d = defn(
        step("fetch", agent_type="llm", input_data={"prompt": "$.input.topic"}),
        step("edit", input_data={"text": "$.steps.fetch.output.text"}, depends_on=["fetch"]),
        step("gate", type="approval", depends_on=["edit"], input_schema={"type": "object"},
             input_data={"show": "$.steps.edit.output"}),
        step("each", engine="word_count", depends_on=["gate"], for_each="$.steps.fetch.output.items",
             max_concurrency=3, input_data={"text": "$.item.body", "literal": "$$.item"}),
        step("mine", agent_id=str(AGENT), depends_on=["each"], input_data={"text": "$.steps.each.output"},
             when={"path": "$.steps.fetch.output.ok", "equals": True}),
        input_schema={"type": "object", "properties": {"topic": {"type": "string"}}},
    )
    assert v.violations(d, step_agent_types={"mine": "editing"}, engines=ENGINES) == []


def test_every_violation_is_reported_at_once_in_definition_order() -> None:
    d = defn(
        step("a", agent_type="nonsense"),
        step("a"),
        step("b", depends_on=["ghost", "a"]),
        step("c", engine="nope"),
        step("d", agent_id=str(AGENT)),
        step("e", input_data={"text": "$.steps.c.output"}),
    )
    assert found(d) == [
        ("steps[0].agent_type", v.UNKNOWN_AGENT_TYPE),
        ("steps[1].step_id", v.DUPLICATE_STEP_ID),
        ("steps[2].depends_on[0]", v.UNKNOWN_DEPENDENCY),
        ("steps[3].engine", v.UNKNOWN_ENGINE),
        ("steps[4].agent_id", v.UNKNOWN_AGENT),
        ("steps[5].input_data.text", v.REFERENCE_NOT_UPSTREAM),
    ]


def test_orchestrator_steps_are_refused_by_type_and_by_agent() -> None:
    d = defn(step("plan", agent_type="orchestrator", input_data={"goal": "x"}),
             step("boss", agent_id=str(BOSS)))
    assert found(d, {"boss": "orchestrator"}) == [
        ("steps[0].agent_type", v.ORCHESTRATOR_STEP_FORBIDDEN),
        ("steps[1].agent_id", v.ORCHESTRATOR_STEP_FORBIDDEN),
    ]


def test_unimplemented_agent_type_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.agents import registry

    monkeypatch.setattr(registry, "available_types", lambda: ("llm",))
    messages = [x.message for x in v.violations(defn(step("a")), step_agent_types={}, engines=())]
    assert messages == ["agent type 'editing' has no implementation yet"]


def test_cycles_name_their_steps_once_per_cycle() -> None:
    d = defn(step("root"), step("a", depends_on=["c", "root"]), step("b", depends_on=["a"]),
             step("c", depends_on=["b"]), step("x", depends_on=["y"]), step("y", depends_on=["x"]),
             step("after", depends_on=["c"]))
    got = v.violations(d, step_agent_types={}, engines=ENGINES)
    assert [(x.path, x.code) for x in got] == [("steps[1].depends_on", v.DEPENDENCY_CYCLE),
                                               ("steps[4].depends_on", v.DEPENDENCY_CYCLE)]
    assert "'a', 'b', 'c'" in got[0].message
    assert "'x', 'y'" in got[1].message


def test_a_self_dependency_built_without_the_model_check_is_a_cycle() -> None:
    d = defn(step("a"))
    d.steps[0].depends_on.append("a")  # pydantic refuses it; a hand-built definition could still carry it
    assert found(d) == [("steps[0].depends_on", v.DEPENDENCY_CYCLE)]


def test_references_must_name_upstream_steps_transitively() -> None:
    d = defn(
        step("a"), step("b", depends_on=["a"]), step("c", depends_on=["b"],
                                                      input_data={"text": "$.steps.a.output.text"}),
        step("side"),
        step("d", depends_on=["c"], input_data={"text": "$.steps.side.output", "x": ["$.steps.d.output"]},
             when={"path": "$.steps.side.output.ok", "exists": True}),
        step("e", depends_on=["a"], input_data={"text": "$.steps.nobody.output"}),
    )
    assert found(d) == [
        ("steps[4].input_data.text", v.REFERENCE_NOT_UPSTREAM),
        ("steps[4].input_data.x[0]", v.REFERENCE_NOT_UPSTREAM),
        ("steps[4].when.path", v.REFERENCE_NOT_UPSTREAM),
        ("steps[5].input_data.text", v.UNKNOWN_STEP_REFERENCE),
    ]
    msg = v.violations(d, step_agent_types={}, engines=ENGINES)[1].message
    assert "its own output" in msg


def test_for_each_references_are_checked_like_the_others() -> None:
    d = defn(step("a"), step("b", for_each="$.steps.a.output.items", max_concurrency=2),
             step("c", for_each="$.steps.zzz.output", max_concurrency=2, depends_on=["a"]),
             step("d", for_each="$.item.list", max_concurrency=2, depends_on=["a"]),
             step("e", for_each="$.steps.a.result", max_concurrency=2, depends_on=["a"]))
    assert found(d) == [
        ("steps[1].for_each", v.REFERENCE_NOT_UPSTREAM),
        ("steps[2].for_each", v.UNKNOWN_STEP_REFERENCE),
        ("steps[3].for_each", v.FOR_EACH_NOT_ARRAY),
        ("steps[4].for_each", v.MALFORMED_REFERENCE),
    ]


def test_item_only_inside_a_for_each_steps_input() -> None:
    d = defn(step("a", input_data={"text": "$.item"}),
             step("b", for_each="$.input.list", max_concurrency=1, input_data={"text": "$.item.t"},
                  when={"path": "$.item.ok", "exists": True}))
    assert found(d) == [("steps[0].input_data.text", v.ITEM_OUTSIDE_FOR_EACH),
                        ("steps[1].when.path", v.ITEM_OUTSIDE_FOR_EACH)]


def test_malformed_references_are_all_reported() -> None:
    d = defn(step("a", input_data={"text": "$.inputs", "style": {"x": ["ok", "$.steps.a"]}},
                  when={"path": "$.nope", "equals": 1}))
    got = v.violations(d, step_agent_types={}, engines=ENGINES)
    assert [(x.path, x.code) for x in got][:3] == [
        ("steps[0].input_data.text", v.MALFORMED_REFERENCE),
        ("steps[0].input_data.style.x[1]", v.MALFORMED_REFERENCE),
        ("steps[0].when.path", v.MALFORMED_REFERENCE),
    ]
    assert "'$.inputs'" in got[0].message


def test_input_is_checked_against_the_agent_types_schema() -> None:
    d = defn(step("a", agent_type="editing", input_data={"txt": "hello"}),
             step("b", agent_id=str(LLM_AGENT), input_data={"prompt": ""}))
    assert found(d, {"b": "llm"}) == [
        ("steps[0].input_data.text", v.INPUT_SCHEMA_MISMATCH),
        ("steps[0].input_data.txt", v.INPUT_SCHEMA_MISMATCH),
        ("steps[1].input_data.prompt", v.INPUT_SCHEMA_MISMATCH),
    ]


def test_references_never_cause_a_schema_violation() -> None:
    d = defn(
        step("a", agent_type="llm", input_data={"prompt": "$.input.p"}),  # a required property
        step("b", agent_type="llm", input_data={"prompt": "hi", "messages": ["$.input.m"]}, depends_on=["a"]),
        step("c", agent_type="llm", input_data={"prompt": "hi", "messages": [{"role": "user",
                                                                               "content": "$.input.x"}]}),
        # security picks its member from `mode`: a referenced mode leaves every top-level key unknowable
        step("d", agent_type="security", input_data={"mode": "$.input.mode", "window_minutes": 5}),
        # validation picks its shape from whether `records` is present
        step("e", agent_type="validation", input_data={"records": "$.input.rows", "rules": {"unique": ["id"]}}),
    )
    assert found(d) == []


def test_schema_errors_next_to_a_reference_are_still_reported_for_plain_models() -> None:
    d = defn(step("a", agent_type="llm", input_data={"prompt": "$.input.p", "bogus": 1}))
    assert found(d) == [("steps[0].input_data.bogus", v.INPUT_SCHEMA_MISMATCH)]


def test_escaped_literals_are_checked_as_the_literal_they_stand_for() -> None:
    ok = defn(step("a", agent_type="llm", input_data={"prompt": "$$.input is a literal"}))
    assert found(ok) == []


def test_approval_and_definition_input_schemas_must_be_json_schemas() -> None:
    d = defn(step("gate", type="approval", input_schema={"type": "nonsense"}),
             input_schema={"properties": {"a": {"type": 5}}})
    assert found(d) == [("input_schema.properties.a.type", v.INVALID_JSON_SCHEMA),
                        ("steps[0].input_schema.type", v.INVALID_JSON_SCHEMA)]


def test_json_schemas_are_bounded_like_validation_agent_schemas() -> None:
    d = defn(step("gate", type="approval", input_schema={"properties": {"a": {"type": "string",
                                                                               "pattern": "(a+)+\\1"}}}),
             input_schema={"$schema": "https://example.com/my-dialect"})
    got = v.violations(d, step_agent_types={}, engines=ENGINES)
    assert [(x.path, x.code) for x in got] == [("input_schema.$schema", v.INVALID_JSON_SCHEMA),
                                               ("steps[0].input_schema.properties.a.pattern", v.INVALID_JSON_SCHEMA)]


INPUT_SCHEMA = {"type": "object", "additionalProperties": False, "properties": {
    "topic": {"type": "string"},
    "files": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}},
                                         "additionalProperties": False}},
    "meta": {"type": "object"},
    "loose": {"properties": {"a": {"type": "string"}}, "additionalProperties": False},  # no type: any value
    "either": {"anyOf": [{"type": "string"}, {"type": "array"}]},
    "never": False,
}}


@pytest.mark.parametrize(("reference", "expected"), [
    ("$.input.topic", None),
    ("$.input.files.0.name", None),
    ("$.input.meta.anything.at.all", None),
    ("$.input.loose.b", None),  # without a type the value could be an array or a string: not certain
    ("$.input.either.x", None),  # anyOf is not modelled: never a guess
    ("$.input.nope", v.UNKNOWN_INPUT_PATH),
    ("$.input.never", v.UNKNOWN_INPUT_PATH),
    ("$.input.topic.x", v.UNKNOWN_INPUT_PATH),  # into a string
    ("$.input.files.first", v.UNKNOWN_INPUT_PATH),  # arrays have only digit segments
    ("$.input.files.3.size", v.UNKNOWN_INPUT_PATH),
])
def test_input_references_the_input_schema_rules_out_are_unknown(reference: str, expected: str | None) -> None:
    d = defn(step("a", input_data={"text": reference}), input_schema=INPUT_SCHEMA)
    assert found(d) == ([("steps[0].input_data.text", expected)] if expected else [])


def test_for_each_over_the_input_must_be_an_array_where_the_schema_says() -> None:
    d = defn(step("a", for_each="$.input", max_concurrency=1),  # a run's input is always an object
             step("b", for_each="$.input.topic", max_concurrency=1),
             step("c", for_each="$.input.files", max_concurrency=1),
             step("d", for_each="$.input.either", max_concurrency=1),
             step("e", for_each="$.input.missing", max_concurrency=1),
             input_schema=INPUT_SCHEMA)
    got = v.violations(d, step_agent_types={}, engines=ENGINES)
    assert [(x.path, x.code) for x in got] == [("steps[0].for_each", v.FOR_EACH_NOT_ARRAY),
                                               ("steps[1].for_each", v.FOR_EACH_NOT_ARRAY),
                                               ("steps[4].for_each", v.UNKNOWN_INPUT_PATH)]
    assert "makes '$.input.topic' string" in got[1].message
    # without an input_schema only the input itself is known (an object)
    assert found(defn(step("a", for_each="$.input", max_concurrency=1),
                      step("b", for_each="$.input.x", max_concurrency=1))) == [("steps[0].for_each",
                                                                                v.FOR_EACH_NOT_ARRAY)]


def test_more_than_the_step_limit_is_a_clear_violation() -> None:
    d = defn(step("s0"))
    d.steps.extend(d.steps[0].model_copy(update={"step_id": f"s{i}"}) for i in range(1, 101))
    got = v.violations(d, step_agent_types={}, engines=ENGINES)
    assert [(x.path, x.code) for x in got] == [("steps", v.TOO_MANY_STEPS)]
    assert "at most 100 steps (this one has 101)" in got[0].message


def test_a_hundred_step_chain_validates_quickly_enough_to_be_linear() -> None:
    steps = [step("s0")] + [step(f"s{i}", depends_on=[f"s{i - 1}"], input_data={"text": f"$.steps.s{i - 1}.output"})
                            for i in range(1, 100)]
    assert found(defn(*steps)) == []


def test_violation_as_dict_is_the_envelope_shape() -> None:
    assert v.Violation("steps[0]", "X", "m").as_dict() == {"path": "steps[0]", "code": "X", "message": "m"}


COUNT_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["text", "unit"],
                "properties": {"text": {"type": "string", "minLength": 1}, "unit": {"enum": ["words", "chars"]},
                               "opts": {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}}}


def test_engine_inputs_are_checked_when_the_engines_schemas_are_given() -> None:
    d = defn(step("a", engine="count", input_data={"text": "", "opts": {}}),
             step("b", engine="count", input_data={"text": "$.input.t", "unit": "lines"}),
             step("c", engine="count", input_data={"text": "$.input.t", "unit": "words", "opts": {"n": "$.input.n"}}),
             step("d", engine="free", input_data={"anything": 1}))
    got = [(x.path, x.code) for x in v.violations(d, step_agent_types={}, engines={"count": COUNT_SCHEMA,
                                                                                   "free": None})]
    assert sorted(got) == [
        ("steps[0].input_data.opts.n", v.INPUT_SCHEMA_MISMATCH),
        ("steps[0].input_data.text", v.INPUT_SCHEMA_MISMATCH),
        ("steps[0].input_data.unit", v.INPUT_SCHEMA_MISMATCH),
        ("steps[1].input_data.unit", v.INPUT_SCHEMA_MISMATCH),
    ]
    # names only (a plain collection): the engine exists, its input is its own business
    assert found(defn(step("a", engine="word_count", input_data={"x": 1}))) == []
