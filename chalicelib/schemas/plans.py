"""An orchestrator's plan: steps, each run by one agent, possibly after other steps.

Checked when the task is created (422 with the violations): unique step ids,
known dependencies, no cycles, exactly one of agent_id / agent_type, no
orchestrator steps (plans do not nest), and —
when the step names a type — its input against that type's input schema.
Steps naming an agent by id are checked when the orchestrator resolves them.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from chalicelib.domain.agents import AGENT_TYPES
from chalicelib.schemas.common import NAME_CHARS, JsonObject

StepId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
MAX_STEPS = 50


class PlanStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step_id: StepId
    agent_id: uuid.UUID | None = Field(default=None, description="Run this step on one of your agents...")
    agent_type: str | None = Field(default=None, description="...or on your best available agent of this type.")
    title: Annotated[str, StringConstraints(min_length=1, max_length=200), NAME_CHARS] | None = None
    input_data: JsonObject = Field(default_factory=dict)
    depends_on: list[StepId] = Field(default_factory=list, max_length=MAX_STEPS,
                                     description="Steps that must complete before this one starts.")

    @model_validator(mode="after")
    def _one_agent(self) -> PlanStep:
        if (self.agent_id is None) == (self.agent_type is None):
            raise ValueError("give exactly one of agent_id or agent_type")
        if self.agent_type == "orchestrator":
            raise ValueError("a plan step may not run an orchestrator (ORCHESTRATOR_STEP_FORBIDDEN): plans do not "
                             "nest")
        if self.agent_type is not None:
            _check_typed_input(self.agent_type, self.input_data)
        if self.step_id in self.depends_on:
            raise ValueError(f"step {self.step_id!r} depends on itself")
        return self


def _check_typed_input(agent_type: str, input_data: dict[str, Any]) -> None:
    from chalicelib.agents import registry
    from chalicelib.errors import ValidationError

    if agent_type not in AGENT_TYPES:
        raise ValueError(f"unknown agent type {agent_type!r}; expected one of: {', '.join(AGENT_TYPES)}")
    if agent_type not in registry.available_types():
        raise ValueError(f"agent type {agent_type!r} has no implementation yet")
    try:
        registry.validate_input(agent_type, input_data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(e['loc'][1:]) or '(root)'}: {e['msg']}"
                             for e in exc.details.get("errors", []))
        raise ValueError(f"input_data does not match the {agent_type!r} input schema: {problems}") from exc


def check_plan(steps: list[PlanStep]) -> list[PlanStep]:
    """Unique ids, dependencies that exist, and an order in which every step can start (no cycle)."""
    ids = [s.step_id for s in steps]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"duplicate step ids: {', '.join(duplicates)}")
    known = set(ids)
    for step in steps:
        unknown = [d for d in step.depends_on if d not in known]
        if unknown:
            raise ValueError(f"step {step.step_id!r} depends on unknown steps: {', '.join(unknown)}")
    done: set[str] = set()
    remaining = list(steps)
    while remaining:
        ready = [s for s in remaining if set(s.depends_on) <= done]
        if not ready:
            raise ValueError(f"the plan has a dependency cycle among: {', '.join(s.step_id for s in remaining)}")
        done.update(s.step_id for s in ready)
        remaining = [s for s in remaining if s.step_id not in done]
    return steps
