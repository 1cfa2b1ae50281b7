"""Request and response models of /workflows and /runs (docs/workflows-api.md).

The request model of a definition is `chalicelib.workflows.definition.WorkflowCreate`; its violations are
reported all at once as 422 WORKFLOW_INVALID (`Violation` below), not as the generic VALIDATION_ERROR.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, RootModel, StringConstraints

from chalicelib.schemas.common import TEXT_CHARS, FilterDatetime, JsonObject, PublicModel, StrictModel

RunStatus = Literal["running", "waiting_approval", "succeeded", "failed", "cancelled", "timed_out"]
StepStatus = Literal["pending", "running", "succeeded", "failed", "skipped", "waiting_approval", "cancelled",
                     "timed_out"]
Cursor = Annotated[str, TEXT_CHARS]


class RawObject(RootModel[dict[str, Any]]):
    """Any JSON object: the body is read here and validated by the service (every violation at once)."""


class Violation(PublicModel):
    path: str = Field(description="Where in the definition, e.g. `steps[2].depends_on[0]` (empty: the whole).")
    code: str = Field(description="What kind of violation (UNKNOWN_STEP, CYCLE, UNKNOWN_AGENT, ...).")
    message: str


class WorkflowListQuery(StrictModel):
    limit: int | None = Field(default=None, ge=1)
    cursor: Cursor | None = None


class WorkflowSummary(PublicModel):
    id: uuid.UUID
    name: str
    description: str | None
    current_version: int
    created_at: datetime
    updated_at: datetime


class WorkflowPublic(WorkflowSummary):
    """A workflow with its current version: the definition as written and the ASL it compiled to (queue URLs as
    `${AgentQueueUrl:<type>}` / `${ControlQueueUrl}` placeholders)."""

    version: int
    version_id: uuid.UUID
    definition: dict[str, Any]
    asl: dict[str, Any]
    #: agent_id steps: the agent type each resolved to when the version was written.
    step_agent_types: dict[str, str]


class RunStart(StrictModel):
    input: JsonObject = Field(default_factory=dict, description="Checked against the workflow's input_schema.")


class RunListQuery(StrictModel):
    status: RunStatus | None = None
    created_after: FilterDatetime | None = None
    created_before: FilterDatetime | None = None
    limit: int | None = Field(default=None, ge=1)
    cursor: Cursor | None = None


class DecisionRequest(StrictModel):
    approve: bool
    comment: Annotated[str, StringConstraints(max_length=2000), TEXT_CHARS] | None = None
    payload: JsonObject | None = Field(default=None, description="Checked against the step's input_schema.")


class ItemPublic(PublicModel):
    index: int
    status: str
    task_id: uuid.UUID | None


class ForEachPublic(PublicModel):
    items_total: int | None
    items_failed: int
    items: list[ItemPublic]


class ApprovalPublic(PublicModel):
    waiting: bool = Field(description="True while the gate waits for a decision.")
    decision: Literal["approved", "rejected"] | None
    comment: str | None
    payload: dict[str, Any] | None
    decided_by: uuid.UUID | None
    decided_at: datetime | None


class RunStepPublic(PublicModel):
    step_id: str
    type: Literal["task", "approval"]
    status: StepStatus
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    task_id: uuid.UUID | None
    #: inline when at most 64 KB of JSON, else `{"truncated": true, "task_id": ..., "bytes": n}` (read the task).
    output: dict[str, Any] | None
    error: dict[str, Any] | None
    for_each: ForEachPublic | None = None
    approval: ApprovalPublic | None = None


class ExecutionPublic(PublicModel):
    execution: int
    arn: str | None
    started_at: datetime | None
    #: "start": a new execution (StartExecution); "redrive": the same execution resumed (RedriveExecution).
    mode: Literal["start", "redrive"]


class RunSummary(PublicModel):
    id: uuid.UUID
    workflow_id: uuid.UUID
    version: int
    version_id: uuid.UUID
    status: RunStatus
    input: dict[str, Any]
    output: dict[str, Any] | None
    error: dict[str, Any] | None
    execution: int
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class RunPublic(RunSummary):
    """A run with its executions and its step timeline (every step, in definition order)."""

    executions: list[ExecutionPublic]
    steps: list[RunStepPublic]
