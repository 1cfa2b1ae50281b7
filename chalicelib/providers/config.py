"""The provider part of a provider-backed agent's configuration (`agents.config`).

An agent either picks one of the operator's endpoints by alias (`endpoint`; default "default",
the stage's YMERA_LLM_* settings) — the operator's key is used there and only there — or brings
its own OpenAI-compatible endpoint (`base_url`) with its own key: the name of a key the user
stored with `PUT /provider-keys/{name}` (`key`), or none (a keyless local server such as Ollama).
Agents never name environment variables or secrets: those are the operator's (chalicelib.providers.catalog).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: aliases and stored key names: lower-case, digits, '-' and '_'.
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
#: keys accepted before the endpoint catalog; an agent saved with one is told what to use instead.
REMOVED_KEYS = {
    "api_key_env": "environment variables are the operator's",
    "api_key_secret_arn": "secrets are the operator's",
}
REMOVED_HINT = ("pick one of the operator's endpoints with config.endpoint (an unknown alias is answered with "
                "the list), or bring your own endpoint with config.base_url and store its key with "
                "PUT /provider-keys/{name}, then set config.key to that name")


class ProviderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint: str | None = Field(
        default=None, pattern=NAME_PATTERN,
        description="Alias of an operator endpoint (YMERA_LLM_ENDPOINTS); default 'default' (the stage's YMERA_LLM_*)")
    provider: Literal["openai", "bedrock"] | None = Field(
        default=None, description="Optional check: the endpoint's provider ('openai' or 'bedrock')")
    model: str | None = Field(default=None, min_length=1, max_length=200,
                              description="Model id; must be one the endpoint allows. Default: the endpoint's")
    base_url: str | None = Field(
        default=None, max_length=500, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="Your own OpenAI-compatible endpoint (https outside development; public addresses only "
                    "unless the stage allows private ones). Excludes `endpoint`")
    key: str | None = Field(default=None, pattern=NAME_PATTERN,
                            description="Name of your stored provider key (PUT /provider-keys/{name}), "
                                        "sent only to your base_url")
    max_tokens: int = Field(default=1024, ge=1, le=200_000, description="Output tokens per model call")
    temperature: float = Field(default=0.2, ge=0, le=2)
    timeout_seconds: float = Field(
        default=30.0, gt=0, le=300,
        description="One attempt's timeout (an operator endpoint raises it to YMERA_LLM_MIN_TIMEOUT_SECONDS)")
    max_total_tokens: int | None = Field(
        default=20_000, ge=1,
        description="Per-task cap on input+output tokens; an operator endpoint's max_tokens_per_task caps it")
    cache_ttl_seconds: int | None = Field(
        default=None, ge=1, le=30 * 86_400,
        description="Opt-in: an identical prompt (same endpoint, model, messages and parameters) from you is answered "
                    "from a cache for this long instead of calling the model again (capped by "
                    "YMERA_LLM_CACHE_MAX_TTL_SECONDS; never shared between users)")
    max_wall_seconds: float = Field(
        default=50.0, gt=0, le=900,
        description="Per-task cap on time spent; capped below the function timeout (YMERA_FUNCTION_TIMEOUT_SECONDS)")

    @model_validator(mode="before")
    @classmethod
    def _removed(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, why in REMOVED_KEYS.items():
                if key in data:
                    raise ValueError(f"config.{key} is no longer supported ({why}): {REMOVED_HINT}")
        return data

    @model_validator(mode="after")
    def _coherent(self) -> ProviderConfig:
        if self.endpoint and self.base_url:
            raise ValueError("set config.endpoint (an operator endpoint) or config.base_url (your own), not both")
        if self.key and not self.base_url:
            raise ValueError("config.key is your key for your own endpoint: set config.base_url too")
        if self.base_url and self.provider == "bedrock":
            raise ValueError("your own endpoint must be OpenAI-compatible: bedrock is available only as an "
                             "operator endpoint (config.endpoint)")
        return self
