from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from chalicelib.domain.agents import AGENT_TYPES
from chalicelib.domain.tasks import TaskPriority, TaskStatus
from chalicelib.schemas.common import NAME_CHARS, TEXT_CHARS, FilterDatetime, JsonObject, PublicModel, StrictModel


class TaskCreate(StrictModel):
    #: exactly one of the two: a named agent, or an agent type to route to (chalicelib.engines.optimization).
    agent_id: uuid.UUID | None = None
    agent_type: str | None = None
    title: Annotated[str, StringConstraints(min_length=1, max_length=200), NAME_CHARS]
    description: Annotated[str, StringConstraints(max_length=5000), TEXT_CHARS] | None = None
    priority: TaskPriority = TaskPriority.NORMAL
    input_data: JsonObject = Field(default_factory=dict)

    @field_validator("agent_type")
    @classmethod
    def _known_type(cls, value: str | None) -> str | None:
        if value is not None and value not in AGENT_TYPES:
            raise ValueError(f"unknown agent type {value!r}; expected one of: {', '.join(AGENT_TYPES)}")
        return value

    @model_validator(mode="after")
    def _one_target(self) -> TaskCreate:
        if (self.agent_id is None) == (self.agent_type is None):
            raise ValueError("send exactly one of agent_id (a named agent) or agent_type (routed to one)")
        return self


class TaskListQuery(StrictModel):
    status: TaskStatus | None = None
    agent_id: uuid.UUID | None = None
    priority: TaskPriority | None = None
    created_after: FilterDatetime | None = None
    created_before: FilterDatetime | None = None
    limit: int | None = Field(default=None, ge=1)
    cursor: Annotated[str, TEXT_CHARS] | None = None


class TaskResultPublic(PublicModel):
    id: uuid.UUID
    status: str
    output_data: dict[str, Any]
    metrics: dict[str, Any]
    created_at: datetime


class TaskPublic(PublicModel):
    id: uuid.UUID
    agent_id: uuid.UUID
    agent_type: str
    title: str
    description: str | None
    status: str
    priority: str
    input_data: dict[str, Any]
    attempts: int
    error: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    #: the orchestrator task whose plan this task is a step of (chalicelib.services.orchestration).
    parent_task_id: uuid.UUID | None = None
    #: a workflow step's task: its run, step, and for_each item (GET /runs/{run_id} has the timeline).
    run_id: uuid.UUID | None = None
    step_id: str | None = None
    item_index: int | None = None
    result: TaskResultPublic | None = None


class TaskMessage(BaseModel):
    """The body of an agent-queue message. The database holds everything else."""

    model_config = ConfigDict(extra="ignore")

    task_id: uuid.UUID
    agent_type: str
