"""Which engines exist, by name. The engines issue registers its engines here (`IMPLEMENTATIONS`, loaded
lazily like agent types); tests and plug-ins call `register`."""

from __future__ import annotations

import importlib
from typing import Any

from jsonschema import Draft202012Validator

from chalicelib.engines import Engine
from chalicelib.errors import AgentError

#: engine name -> "module:Class", imported on first use (the consumers do not pay for unused engines).
IMPLEMENTATIONS: dict[str, str] = {
    "analytics": "chalicelib.engines.analytics:AnalyticsEngine",
    "performance": "chalicelib.engines.performance:PerformanceEngine",
    "optimization": "chalicelib.engines.optimization:OptimizationEngine",
    "recommendation": "chalicelib.engines.recommendation:RecommendationEngine",
    "intelligence": "chalicelib.engines.intelligence:IntelligenceEngine",
    "learning": "chalicelib.engines.learning:LearningEngine",
}

_loaded: dict[str, Engine] = {}


# Failures of a step's work, like an agent's (not API errors: the API validates engine names and inputs at
# create time, chalicelib.workflows.validate); they fail the step with their code.
class EngineNotFoundError(AgentError):
    code = "ENGINE_NOT_FOUND"


class EngineInputInvalidError(AgentError):
    code = "ENGINE_INPUT_INVALID"


def register(engine: Engine, *, replace: bool = False) -> Engine:
    """Make an engine instance available by its name (a second engine with a taken name is refused)."""
    name = engine.name
    if not replace and (name in _loaded or name in IMPLEMENTATIONS):
        raise ValueError(f"engine {name!r} is already registered")
    _loaded[name] = engine
    return engine


def unregister(name: str) -> None:
    _loaded.pop(name, None)


def names() -> list[str]:
    return sorted(set(_loaded) | set(IMPLEMENTATIONS))


def get(name: str) -> Engine:
    engine = _loaded.get(name)
    if engine is not None:
        return engine
    target = IMPLEMENTATIONS.get(name)
    if target is None:
        raise EngineNotFoundError(f"there is no engine {name!r}", {"engine": name, "available": names()})
    module_name, class_name = target.split(":")
    instance: Engine = getattr(importlib.import_module(module_name), class_name)()
    _loaded[name] = instance
    return instance


def validate_input(engine: Engine, data: Any) -> dict[str, Any]:
    """`data` checked against the engine's input schema; every violation at once."""
    errors = sorted(Draft202012Validator(engine.input_schema).iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        raise EngineInputInvalidError(
            f"the input does not match the {engine.name!r} engine's input schema",
            {"engine": engine.name, "errors": [{"path": "/" + "/".join(str(p) for p in e.absolute_path),
                                                "message": e.message, "validator": str(e.validator)}
                                               for e in errors[:50]]})
    if not isinstance(data, dict):
        raise EngineInputInvalidError(f"the {engine.name!r} engine's input must be an object", {"engine": engine.name})
    return data
