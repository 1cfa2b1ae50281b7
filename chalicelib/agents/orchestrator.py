"""The `orchestrator` agent: a goal and a plan of steps, each run by another agent.

Running the task checks every step (an agent of yours by id, or your best
active agent of a type, and each step's input), then starts the plan as a
workflow run on Step Functions (chalicelib.services.orchestration: a hidden
workflow of kind "plan" whose run's parent is this task) and leaves the task
`processing`. Each step is a task of the run and a subtask of this one. Plans
do not nest (no step may run an orchestrator), and a root task's tree is
bounded in depth and size (docs/consumers.md). When the run ends
(chalicelib.workflows.plan_outcome) the task completes with every step's
output, or fails (SUBTASK_FAILED, naming the step) when a step failed, the
rest cancelled; cancelling the task cancels its run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from chalicelib.agents.base import Agent, AgentContext, AgentOutput
from chalicelib.errors import AgentError
from chalicelib.providers.config import ProviderConfig
from chalicelib.schemas.plans import MAX_STEPS, PlanStep, check_plan


class OrchestratorInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    goal: str = Field(min_length=1, max_length=2000, description="What the steps achieve together.")
    plan: list[PlanStep] | None = Field(
        default=None, min_length=1, max_length=MAX_STEPS,
        description="The steps. Omitted: the orchestrator's language-model provider drafts the plan.")

    @field_validator("plan")
    @classmethod
    def _coherent(cls, value: list[PlanStep] | None) -> list[PlanStep] | None:
        return check_plan(value) if value is not None else None


class OrchestratorConfig(ProviderConfig):
    """The provider keys (chalicelib.providers.config) are used only to draft a plan when none is given."""

    #: plans longer than this are refused when the task runs (the input schema allows up to 50).
    max_steps: int = Field(default=20, ge=1, le=MAX_STEPS)


class PlanTooLongError(AgentError):
    code = "PLAN_TOO_LONG"


class DraftedPlanInvalidError(AgentError):
    code = "PLAN_INVALID"


class OrchestratorAgent(Agent):
    type = "orchestrator"
    Input = OrchestratorInput
    Config = OrchestratorConfig
    description = ("Runs a plan as a workflow run: each step is a subtask on one of your other agents (by id or by "
                   "type), dependent steps start when their dependencies complete, and the task completes with every "
                   "step's output — or fails with the first failed step, cancelling the rest.")
    capabilities = ("fan-out", "dependencies", "aggregation", "fail-fast")
    example_input = {
        "goal": "Check the order payload and review the code that builds it",
        "plan": [
            {"step_id": "schema", "agent_type": "validation",
             "input_data": {"schema": {"type": "object", "required": ["id"]}, "payload": {"id": "A-1"}}},
            {"step_id": "review", "agent_type": "examination", "depends_on": ["schema"],
             "input_data": {"source": "def total(items):\n    return sum(i.price for i in items)\n"}},
        ],
    }

    def run(self, data: BaseModel, config: Mapping[str, Any], ctx: AgentContext | None = None) -> AgentOutput:
        assert isinstance(data, OrchestratorInput)
        if ctx is None:
            raise AgentError("the orchestrator needs the database (no task context)")
        from chalicelib.agents.provider_support import load_config
        from chalicelib.services.orchestration import Bounds

        cfg = load_config(OrchestratorConfig, config)
        metrics: dict[str, Any] = {}
        plan = data.plan
        if plan is None:
            plan, metrics = draft_plan(data.goal, cfg, ctx)  # a model call: no transaction is open
            ctx.raise_if_cancelled()  # between steps: a cancelled task starts no subtask
        if len(plan) > cfg.max_steps:
            raise PlanTooLongError(f"the plan has {len(plan)} steps; this orchestrator allows {cfg.max_steps}",
                                   {"steps": len(plan), "max_steps": cfg.max_steps})
        settings = ctx.settings
        bounds = Bounds(settings.orchestrator_max_depth, settings.orchestrator_max_descendants,
                        settings.task_max_run_seconds) if settings is not None else Bounds()
        plans = ctx.ports.plans if ctx.ports is not None else None
        if plans is None:
            raise AgentError("the orchestrator needs the workflow runtime (no plans port)")
        run_id = plans.start(ctx.task_id, data.goal, plan, drafted=data.plan is None, bounds=bounds)
        return AgentOutput(
            output={"goal": data.goal, "planned_by": "provider" if data.plan is None else "input",
                    "run_id": str(run_id)},
            metrics={**metrics, "steps": len(plan)},
            pending=True,
        )


PLANNER_PROMPT = """You plan work for a team of agents. Answer with JSON only: {"plan": [step, ...]} where each
step is {"step_id": short id, "agent_type": one of the types below, "title": short title,
"input_data": an object matching that type's input schema, "depends_on": [step_ids that must finish first]}.
Use as few steps as the goal needs (at most %d). Available agent types and their input schemas:
%s"""


def draft_plan(goal: str, cfg: OrchestratorConfig, ctx: AgentContext) -> tuple[list[PlanStep], dict[str, Any]]:
    """Ask the configured language model for a plan over the types the owner has active agents of."""
    from pydantic import ValidationError as PydanticValidationError
    from sqlalchemy import select

    from chalicelib.agents import registry
    from chalicelib.agents.provider_support import extract_json, optional_session
    from chalicelib.db.models import Agent as AgentRow
    from chalicelib.providers.errors import ProviderNotConfiguredError
    from chalicelib.providers.registry import AGENT_KEYS, NOT_CONFIGURED, STAGE_KEYS
    from chalicelib.services.orchestration import ORCHESTRATOR, OrchestratorStepForbiddenError

    session = optional_session(cfg, ctx)
    if session is None:
        raise ProviderNotConfiguredError(
            "no plan was given and this orchestrator cannot draft one: pass input_data.plan, or configure a "
            "provider. " + NOT_CONFIGURED,
            {"missing": "input_data.plan", "agent_config_keys": AGENT_KEYS, "environment": STAGE_KEYS})
    with ctx.transaction() as db:  # closed before the model is asked
        types = sorted(set(db.scalars(
            select(AgentRow.type).where(AgentRow.user_id == ctx.user_id, AgentRow.status == "active",
                                        AgentRow.deleted_at.is_(None), AgentRow.type != ORCHESTRATOR))))
    if not types:
        raise DraftedPlanInvalidError("you have no active agents (other than orchestrators) to plan for", {})
    schemas = "\n".join(f"- {t}: {json.dumps(registry.get_agent(t).Input.model_json_schema())}" for t in types)
    completion = session.complete(goal, system=PLANNER_PROMPT % (cfg.max_steps, schemas))
    try:
        answer = extract_json(completion.text)
        steps = answer.get("plan") if isinstance(answer, dict) else answer
        if not isinstance(steps, list):
            raise ValueError("the answer has no list of steps")
        nested = [st.get("step_id") for st in steps if isinstance(st, dict) and st.get("agent_type") == ORCHESTRATOR]
        if nested:
            raise OrchestratorStepForbiddenError("the model's plan has orchestrator steps; plans do not nest",
                                                 {"step_ids": nested, "answer": completion.text[:2000]})
        plan = OrchestratorInput.model_validate({"goal": goal, "plan": steps}).plan
    except (ValueError, PydanticValidationError) as exc:
        errors = registry.pydantic_errors(exc) if isinstance(exc, PydanticValidationError) else [str(exc)]
        raise DraftedPlanInvalidError("the model's plan is not a valid plan; pass input_data.plan instead",
                                      {"errors": errors, "answer": completion.text[:2000]}) from exc
    assert plan is not None
    return plan, session.metrics()
