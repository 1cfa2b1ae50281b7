"""Response models for routes that build plain dicts (GET /health, GET /agent-types).

They exist so the OpenAPI document can describe those bodies; tests/integration/test_openapi.py
checks the real responses against them. Extra keys are allowed (pydantic's default), so a new
field does not break the contract, while a renamed or retyped one does.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel


class DependencyCheck(BaseModel):
    status: Literal["ok", "skipped", "down"]
    latency_ms: float
    required: bool
    detail: str | None = None  # why it was skipped, or the exception class when it is down


class HealthReport(BaseModel):
    status: Literal["ok", "degraded", "unhealthy"]
    version: str
    stage: str
    checks: dict[str, DependencyCheck]  # database, redis, queues
    age_seconds: float = 0.0  # how old this container's cached check is (GET /health/ready)


class LivenessReport(BaseModel):
    status: Literal["ok"]
    version: str
    stage: str


class AgentTypePublic(BaseModel):
    type: str
    description: str
    capabilities: list[str]
    provider_backed: bool
    input_schema: dict[str, Any]  # JSON Schema of the task's input_data
    config_schema: dict[str, Any]  # JSON Schema of the agent's config
    default_config: dict[str, Any]
    example_input: dict[str, Any]


class AgentTypeList(BaseModel):
    items: list[AgentTypePublic]
