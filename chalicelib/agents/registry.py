"""Which agent types have an implementation, loaded lazily by type."""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from chalicelib.agents.base import Agent
from chalicelib.errors import ValidationError

#: agent type -> "module:Class". Adding a type is one line here and one in infra/manifest.py.
IMPLEMENTATIONS: dict[str, str] = {
    "validation": "chalicelib.agents.validation:ValidationAgent",
    "examination": "chalicelib.agents.examination:ExaminationAgent",
    "security": "chalicelib.agents.security:SecurityAgent",
    "llm": "chalicelib.agents.llm:LLMAgent",
    "drafting": "chalicelib.agents.drafting:DraftingAgent",
    "editing": "chalicelib.agents.editing:EditingAgent",
    "enhancement": "chalicelib.agents.enhancement:EnhancementAgent",
    "learning": "chalicelib.agents.learning:LearningAgent",
    "communication": "chalicelib.agents.communication:CommunicationAgent",
    "orchestrator": "chalicelib.agents.orchestrator:OrchestratorAgent",
    "metrics": "chalicelib.agents.metrics:MetricsAgent",
    "monitoring": "chalicelib.agents.monitoring:MonitoringAgent",
}


def available_types() -> tuple[str, ...]:
    return tuple(IMPLEMENTATIONS)


@cache
def get_agent(agent_type: str) -> Agent:
    target = IMPLEMENTATIONS.get(agent_type)
    if target is None:
        raise ValidationError(
            f"agent type {agent_type!r} has no implementation yet",
            {"available_types": list(IMPLEMENTATIONS)},
        )
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    agent: Agent = cls()
    return agent


def validate_input(agent_type: str, input_data: dict[str, Any]) -> dict[str, Any]:
    """Check `input_data` against the type's input model; 422 with every violation."""
    agent = get_agent(agent_type)
    try:
        parsed = agent.Input.model_validate(input_data)
    except PydanticValidationError as exc:
        raise ValidationError(
            f"input_data does not match the {agent_type!r} agent's input schema",
            {"errors": pydantic_errors(exc, prefix=("input_data",))},
        ) from exc
    return parsed.model_dump(mode="json", exclude_unset=False)


def validate_config(agent_type: str, config: dict[str, Any]) -> dict[str, Any]:
    """Check an agent's `config` against its type; 422 with every violation."""
    agent = get_agent(agent_type)
    try:
        agent.Config.model_validate(config)
    except PydanticValidationError as exc:
        raise ValidationError(
            f"config does not match the {agent_type!r} agent's configuration schema",
            {"errors": pydantic_errors(exc, prefix=("config",))},
        ) from exc
    return config


def describe(agent_type: str) -> dict[str, Any]:
    """What `GET /agent-types` shows for one type."""
    agent = get_agent(agent_type)
    return {
        "type": agent_type,
        "description": agent.description,
        "capabilities": list(agent.capabilities),
        "provider_backed": agent.provider_backed,
        "input_schema": agent.Input.model_json_schema(by_alias=True),
        "config_schema": agent.Config.model_json_schema(by_alias=True),
        "default_config": agent.Config().model_dump(mode="json", by_alias=True) if _has_defaults(agent) else {},
        "example_input": agent.example_input,
    }


def _has_defaults(agent: Agent) -> bool:
    try:
        agent.Config()
    except PydanticValidationError:
        return False
    return True


def pydantic_errors(exc: PydanticValidationError, prefix: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Pydantic errors as a stable, JSON-safe list of {loc, msg, type}."""
    return [
        {"loc": [*prefix, *(str(p) for p in err["loc"])], "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_context=False, include_input=False)
    ]
