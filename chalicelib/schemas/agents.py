from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator

from chalicelib.domain.agents import AGENT_TYPES
from chalicelib.schemas.common import NAME_CHARS, JsonObject, PublicModel, StrictModel

AgentName = Annotated[str, StringConstraints(min_length=1, max_length=100), NAME_CHARS]
Capability = Annotated[str, StringConstraints(min_length=1, max_length=64), NAME_CHARS]


def _known_type(value: str) -> str:
    if value not in AGENT_TYPES:
        raise ValueError(f"unknown agent type {value!r}; expected one of: {', '.join(AGENT_TYPES)}")
    return value


class AgentCreate(StrictModel):
    name: AgentName
    type: str
    capabilities: list[Capability] = Field(default_factory=list, max_length=50)
    metadata: JsonObject = Field(default_factory=dict)
    config: JsonObject = Field(default_factory=dict)
    #: managed: runs in the type's consumer; external: a worker you run leases its tasks with an API key.
    mode: Literal["managed", "external"] = "managed"
    #: tasks it may hold at once (routing and leases respect it).
    max_concurrency: int = Field(default=10, ge=1, le=1000)

    _check_type = field_validator("type")(_known_type)


class AgentUpdate(StrictModel):
    name: AgentName | None = None
    status: Literal["active", "inactive"] | None = None
    capabilities: list[Capability] | None = Field(default=None, max_length=50)
    metadata: JsonObject | None = None
    config: JsonObject | None = None
    max_concurrency: int | None = Field(default=None, ge=1, le=1000)


class QualityPublic(PublicModel):
    """The learning agent's Beta(alpha, beta) estimate of result quality (chalicelib.domain.quality)."""

    mean: float = 0.5
    alpha: float = 1.0
    beta: float = 1.0
    updated_at: datetime | None = None


class AgentPublic(PublicModel):
    id: uuid.UUID
    name: str
    type: str
    status: str
    capabilities: list[Any]
    metadata: dict[str, Any] = Field(validation_alias="meta")
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    last_heartbeat: datetime | None
    mode: str
    max_concurrency: int
    #: read from the ORM's `Agent.quality`; the prior (mean 0.5) for an agent nobody rated yet.
    quality: QualityPublic = Field(default_factory=QualityPublic)
