"""What provider-backed agent types share: their config, their session, reading JSON from a model."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from chalicelib.errors import AgentError
from chalicelib.providers.errors import ProviderNotConfiguredError
from chalicelib.providers.registry import AGENT_KEYS, NOT_CONFIGURED, STAGE_KEYS

if TYPE_CHECKING:
    from chalicelib.agents.base import AgentContext, ProviderPort
    from chalicelib.providers.config import ProviderConfig
    from chalicelib.providers.session import LLMSession

ConfigT = TypeVar("ConfigT", bound=BaseModel)
FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n(.*?)\n?```\s*$", re.DOTALL)


class AgentConfigError(AgentError):
    code = "AGENT_CONFIG_INVALID"


def load_config(model: type[ConfigT], config: Mapping[str, Any]) -> ConfigT:
    """The agent's stored config, with the type's defaults filled in.

    It was validated when the agent was saved; this catches configs saved
    before a key was tightened, as a task error instead of a crash.
    """
    from chalicelib.agents.registry import pydantic_errors

    try:
        return model.model_validate(dict(config))
    except PydanticValidationError as exc:
        raise AgentConfigError("the agent's config is no longer valid for its type: update the agent",
                               {"errors": pydantic_errors(exc, prefix=("config",))}) from exc


def _providers(ctx: AgentContext | None) -> ProviderPort | None:
    """The context's providers; an operator's invalid catalog is a task error, not a crash (and not shown)."""
    from chalicelib.config import ConfigError
    from chalicelib.observability import logger

    if ctx is None:
        return None
    try:
        return ctx.providers
    except ConfigError as exc:
        logger.error("the language-model endpoint configuration is invalid", extra={"reason": str(exc)})
        raise ProviderNotConfiguredError("the platform's language-model endpoints are misconfigured; the operator "
                                         "has been told", {}) from None


def open_session(config: ProviderConfig, ctx: AgentContext | None) -> LLMSession:
    providers = _providers(ctx)
    if ctx is None or providers is None:
        raise ProviderNotConfiguredError(NOT_CONFIGURED, {"agent_config_keys": AGENT_KEYS, "environment": STAGE_KEYS})
    return providers.session(config, user_id=ctx.user_id, task_id=ctx.task_id)


def optional_session(config: ProviderConfig, ctx: AgentContext | None) -> LLMSession | None:
    """A session when a provider is named somewhere; None when none is (misconfiguration still raises)."""
    providers = _providers(ctx)
    if ctx is None or providers is None or not providers.is_configured(config):
        return None
    return providers.session(config, user_id=ctx.user_id, task_id=ctx.task_id)


def extract_json(text: str) -> Any:
    """The first JSON object or array in a model's answer (bare, fenced, or inside prose).

    Raises ValueError when there is none: models asked for JSON still add a
    sentence before it or wrap it in ``` fences, so both are tolerated.
    """
    fenced = FENCE.match(text)
    candidate = fenced.group(1) if fenced else text
    try:
        return json.loads(candidate)
    except ValueError:
        pass
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[\[{]", candidate):
        try:
            value, _ = decoder.raw_decode(candidate, match.start())
        except ValueError:
            continue
        if isinstance(value, dict | list):
            return value
    raise ValueError("no JSON object or array in the answer")
