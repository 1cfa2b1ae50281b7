"""A workflow definition as users write it (`POST /workflows`, `PUT /workflows/{id}`).

Field-level rules live here (pydantic); rules that need the whole definition — unknown or cyclic
dependencies, references to steps that are not upstream, inputs against an agent type's schema — are in
`chalicelib.workflows.validate`, which reports every violation at once.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from chalicelib.schemas.common import NAME_CHARS, TEXT_CHARS, JsonObject

#: no dots: a step id is one segment of a reference path (`$.steps.<step_id>.output.<path>`).
StepId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
#: a whole-string reference (`$.input…`, `$.steps.<id>.output…`, `$.item…`); checked by `refs.parse`.
Reference = Annotated[str, StringConstraints(min_length=3, max_length=512, pattern=r"^\$\.")]

MAX_STEPS = 100
MAX_CONCURRENCY = 40
#: a task step's default deadline (Step Functions TimeoutSeconds), and the longest anyone may set.
DEFAULT_STEP_TIMEOUT_SECONDS = 900
MAX_STEP_TIMEOUT_SECONDS = 24 * 3600
DEFAULT_APPROVAL_TIMEOUT_SECONDS = 24 * 3600
MAX_APPROVAL_TIMEOUT_SECONDS = 30 * 24 * 3600
#: a whole run's deadline (the state machine's TimeoutSeconds).
DEFAULT_RUN_TIMEOUT_SECONDS = 7 * 24 * 3600
MAX_RUN_TIMEOUT_SECONDS = 60 * 24 * 3600


class Condition(BaseModel):
    """`when`: the step runs only if the value at `path` passes every operator given (at least one)."""

    model_config = ConfigDict(extra="forbid")

    path: Reference
    equals: Any = None
    not_equals: Any = None
    exists: bool | None = None
    gt: float | None = None
    lt: float | None = None

    @model_validator(mode="after")
    def _one_operator(self) -> Condition:
        given = self.model_fields_set - {"path"}
        if not given:
            raise ValueError("a condition needs at least one of equals, not_equals, exists, gt, lt")
        return self


class RetryPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(default=1, ge=1, le=10, description="Runs of the step in all (1 = no retry).")
    backoff_seconds: int = Field(default=5, ge=1, le=3600, description="Wait before the first retry.")
    backoff_rate: float = Field(default=2.0, ge=1.0, le=10.0, description="Each further wait is this many times "
                                                                            "the one before.")


class WorkflowStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step_id: StepId
    type: Literal["task", "approval"] = "task"
    title: Annotated[str, StringConstraints(min_length=1, max_length=200), NAME_CHARS] | None = None
    agent_id: uuid.UUID | None = Field(default=None, description="Run this step on one of your agents...")
    agent_type: str | None = Field(default=None, description="...or on your best available agent of this type...")
    engine: str | None = Field(default=None, description="...or with one of the platform's engines (GET /engines).")
    input_data: JsonObject = Field(default_factory=dict, description="The step's input; string values that are "
                                   "references ($.input..., $.steps.<id>.output..., $.item...) are replaced.")
    depends_on: list[StepId] = Field(default_factory=list, max_length=MAX_STEPS)
    when: Condition | None = None
    for_each: Reference | None = Field(default=None, description="A reference to an array: one task per item.")
    max_concurrency: int | None = Field(default=None, ge=1, le=MAX_CONCURRENCY,
                                        description="Items in flight at once; required with for_each.")
    tolerated_failure_percentage: float = Field(default=0, ge=0, le=100)
    retry: RetryPolicy | None = None
    timeout_seconds: int | None = Field(default=None, ge=1, le=MAX_APPROVAL_TIMEOUT_SECONDS)
    #: approvals: the JSON Schema a decision's `payload` must match.
    input_schema: JsonObject | None = None

    @model_validator(mode="after")
    def _shape(self) -> WorkflowStep:
        targets = [name for name in ("agent_id", "agent_type", "engine") if getattr(self, name) is not None]
        if self.type == "approval":
            if targets:
                raise ValueError(f"an approval step runs no agent or engine (remove {', '.join(targets)})")
            if self.for_each is not None or self.retry is not None:
                raise ValueError("an approval step takes no for_each or retry")
        else:
            if len(targets) != 1:
                raise ValueError("give exactly one of agent_id, agent_type or engine")
            if self.input_schema is not None:
                raise ValueError("input_schema belongs to approval steps (the decision's payload)")
            if self.timeout_seconds is not None and self.timeout_seconds > MAX_STEP_TIMEOUT_SECONDS:
                raise ValueError(f"a task step's timeout_seconds is at most {MAX_STEP_TIMEOUT_SECONDS}")
        if self.for_each is not None and self.max_concurrency is None:
            raise ValueError("for_each needs max_concurrency (1-40): a fan-out must be bounded")
        if self.for_each is None and self.max_concurrency is not None:
            raise ValueError("max_concurrency applies only to for_each steps")
        if self.step_id in self.depends_on:
            raise ValueError(f"step {self.step_id!r} depends on itself")
        return self

    @property
    def timeout(self) -> int:
        if self.timeout_seconds is not None:
            return self.timeout_seconds
        return DEFAULT_APPROVAL_TIMEOUT_SECONDS if self.type == "approval" else DEFAULT_STEP_TIMEOUT_SECONDS

    @property
    def max_attempts(self) -> int:
        return self.retry.max_attempts if self.retry else 1


class WorkflowDefinition(BaseModel):
    """What a version pins: everything but the name and description."""

    model_config = ConfigDict(extra="forbid")

    input_schema: JsonObject | None = Field(default=None, description="JSON Schema a run's input must match.")
    timeout_seconds: int = Field(default=DEFAULT_RUN_TIMEOUT_SECONDS, ge=60, le=MAX_RUN_TIMEOUT_SECONDS)
    steps: list[WorkflowStep] = Field(min_length=1, max_length=MAX_STEPS)

    def step(self, step_id: str) -> WorkflowStep:
        for s in self.steps:
            if s.step_id == step_id:
                return s
        raise KeyError(step_id)


class WorkflowCreate(WorkflowDefinition):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100), NAME_CHARS]
    description: Annotated[str, StringConstraints(max_length=2000), TEXT_CHARS] | None = None

    def definition(self) -> WorkflowDefinition:
        return WorkflowDefinition.model_validate(self.model_dump(exclude={"name", "description"},
                                                                 exclude_unset=True))
