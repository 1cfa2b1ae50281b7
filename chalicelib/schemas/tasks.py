from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from chalicelib.domain.tasks import TaskPriority, TaskStatus
from chalicelib.schemas.common import PublicModel, StrictModel


class TaskCreate(StrictModel):
    agent_id: uuid.UUID
    title: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    description: Annotated[str, StringConstraints(max_length=5000)] | None = None
    priority: TaskPriority = TaskPriority.NORMAL
    input_data: dict[str, Any] = Field(default_factory=dict)


class TaskListQuery(StrictModel):
    status: TaskStatus | None = None
    agent_id: uuid.UUID | None = None
    priority: TaskPriority | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    limit: int | None = Field(default=None, ge=1)
    cursor: str | None = None


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
    result: TaskResultPublic | None = None


class TaskMessage(BaseModel):
    """The body of an agent-queue message. The database holds everything else."""

    model_config = ConfigDict(extra="ignore")

    task_id: uuid.UUID
    agent_type: str
