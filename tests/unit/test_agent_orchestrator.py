"""An orchestrator's plan is checked when the task is created: every violation is a 422, before anything runs;
a plan maps onto a workflow definition step for step (its strings stay literals)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from chalicelib.agents import registry
from chalicelib.errors import ValidationError
from chalicelib.schemas.plans import PlanStep
from chalicelib.services.orchestration import Bounds, plan_definition, workflow_step_ids
from chalicelib.workflows.definition import WorkflowCreate

SCHEMA_STEP = {"schema": {"type": "object"}, "payload": {}}


def step(step_id: str, **fields: Any) -> dict[str, Any]:
    return {"step_id": step_id, "agent_type": "validation", "input_data": SCHEMA_STEP, **fields}


def errors_of(input_data: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as err:
        registry.validate_input("orchestrator", input_data)
    return [f"{'.'.join(e['loc'])}: {e['msg']}" for e in err.value.details["errors"]]


def test_the_example_plan_is_valid_and_normalised() -> None:
    example = registry.get_agent("orchestrator").example_input
    data = registry.validate_input("orchestrator", example)
    assert [s["step_id"] for s in data["plan"]] == ["schema", "review"]
    assert data["plan"][1]["depends_on"] == ["schema"]


@pytest.mark.parametrize(("plan", "expected"), [
    ([step("a"), step("a")], "duplicate step ids: a"),
    ([step("a", depends_on=["ghost"])], "depends on unknown steps: ghost"),
    ([step("a", depends_on=["b"]), step("b", depends_on=["a"])], "dependency cycle among: a, b"),
    ([step("a", depends_on=["a"])], "depends on itself"),
    ([{"step_id": "a", "input_data": {}}], "exactly one of agent_id or agent_type"),
    ([{"step_id": "a", "agent_type": "validation", "agent_id": str(uuid.uuid4())}], "exactly one of"),
    ([step("a", agent_type="wizard")], "unknown agent type 'wizard'"),
    ([step("bad id!")], "String should match pattern"),
], ids=["duplicate", "unknown-dependency", "cycle", "self-dependency", "no-agent", "both-agents", "unknown-type",
        "step-id"])
def test_incoherent_plans_are_refused(plan: list[dict[str, Any]], expected: str) -> None:
    messages = errors_of({"goal": "g", "plan": plan})
    assert any(expected in m for m in messages), messages


def test_a_typed_step_input_is_checked_against_that_type() -> None:
    messages = errors_of({"goal": "g", "plan": [step("a", input_data={"payload": 1})]})
    assert any("input_data does not match the 'validation' input schema: schema: Field required" in m
               for m in messages), messages


def test_a_step_by_agent_id_is_checked_when_it_runs() -> None:
    # The type behind an id is unknown until the database is read, so any object passes here.
    data = registry.validate_input("orchestrator", {"goal": "g", "plan": [
        {"step_id": "a", "agent_id": str(uuid.uuid4()), "input_data": {"anything": 1}}]})
    assert data["plan"][0]["agent_type"] is None


def test_empty_goal_and_empty_plan_are_refused() -> None:
    messages = errors_of({"goal": "", "plan": []})
    assert any(m.startswith("input_data.goal") for m in messages)
    assert any(m.startswith("input_data.plan") for m in messages)


def test_a_plan_maps_to_a_workflow_definition_step_for_step() -> None:
    agent = uuid.uuid4()
    plan = [PlanStep.model_validate(step("a.1", title="first")),
            PlanStep.model_validate({"step_id": "a_1", "agent_id": str(agent), "depends_on": ["a.1"],
                                     "input_data": {"text": "$.input.x", "deep": ["$$.y", "plain", 3]}})]
    body = plan_definition(uuid.uuid4(), "the goal", plan, Bounds(step_timeout_seconds=600))
    definition = WorkflowCreate.model_validate(body).definition()
    first, second = definition.steps
    # a dot is not allowed in a workflow step id; the clash it would cause is broken by position
    assert (first.step_id, second.step_id) == ("a_1", "a_1_1") and second.depends_on == ["a_1"]
    assert first.agent_type == "validation" and first.title == "first" and first.timeout == 600
    assert second.agent_id == agent and second.agent_type is None
    # strings that a workflow would read as references are escaped: the agent gets them as written
    assert second.input_data == {"text": "$$.input.x", "deep": ["$$$.y", "plain", 3]}
    assert body["description"] == "the goal"
    assert workflow_step_ids(plan) == {"a.1": "a_1", "a_1": "a_1_1"}
