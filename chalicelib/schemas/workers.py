"""Request and response bodies of the external-agent (worker) API and agent status."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints

from chalicelib.schemas.agents import AgentPublic
from chalicelib.schemas.common import TEXT_CHARS, JsonObject, StrictModel


class AgentCreated(AgentPublic):
    """`POST /agents` answer: an external agent's API key appears here once and never again."""

    api_key: str | None = None


class AgentKeyPublic(BaseModel):
    agent_id: uuid.UUID
    api_key: str
    rotated_at: datetime


class LeaseRequest(StrictModel):
    max_tasks: int = Field(default=1, ge=1, le=10)
    #: long polling: wait up to this long for a task when none is waiting.
    wait_seconds: float = Field(default=0, ge=0, le=20)


class LeasedTask(BaseModel):
    id: uuid.UUID
    agent_type: str
    title: str
    description: str | None
    priority: str
    input_data: dict[str, Any]
    #: this lease's attempt number; send it back with complete/fail to fence off stale leases.
    attempts: int
    lease_expires_at: datetime
    created_at: datetime
    parent_task_id: uuid.UUID | None


class LeaseResponse(BaseModel):
    tasks: list[LeasedTask]
    lease_seconds: int
    in_flight: int
    max_concurrency: int


class LeaseInfo(BaseModel):
    task_id: uuid.UUID
    lease_expires_at: datetime | None


class HeartbeatResponse(BaseModel):
    agent_id: uuid.UUID
    last_heartbeat: datetime
    lease_seconds: int
    #: the tasks this agent holds now; one missing from the list was cancelled or taken back.
    tasks: list[LeaseInfo]


class CompleteRequest(StrictModel):
    output_data: JsonObject = Field(default_factory=dict)
    metrics: JsonObject = Field(default_factory=dict)
    #: the `attempts` of the lease this result belongs to; a newer lease of the same task refuses it.
    attempt: int | None = Field(default=None, ge=1)


ErrorCode = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_.\-]*$")]


class TaskErrorBody(StrictModel):
    code: ErrorCode
    message: Annotated[str, StringConstraints(min_length=1, max_length=2000), TEXT_CHARS]
    details: JsonObject = Field(default_factory=dict)


class FailRequest(StrictModel):
    error: TaskErrorBody
    #: true: put the task back in the queue when attempts remain (a transient failure).
    retryable: bool = False
    attempt: int | None = Field(default=None, ge=1)


class TaskOutcomePublic(BaseModel):
    task_id: uuid.UUID
    status: str
    attempts: int
    error: dict[str, Any] | None


class InFlightTask(BaseModel):
    task_id: uuid.UUID
    attempts: int
    started_at: datetime | None
    lease_expires_at: datetime | None


class AgentStatusPublic(BaseModel):
    agent_id: uuid.UUID
    type: str
    mode: str
    status: str
    last_heartbeat: datetime | None
    max_concurrency: int
    in_flight: list[InFlightTask]
    #: tasks of this agent by status (every status present, zeros included).
    task_counts: dict[str, int]
