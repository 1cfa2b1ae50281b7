"""The provider part of a provider-backed agent's configuration (`agents.config`).

Every key is optional: what the agent leaves out comes from the stage
(YMERA_LLM_*). API keys are never stored here in clear — only a reference:
the name of an environment variable (which must start with YMERA_LLM_KEY_,
so an agent cannot make us send, say, the JWT secret to an endpoint of its
choosing) or a Secrets Manager ARN under the `ymera/llm/` name prefix (the
only secrets the functions' role should be allowed to read for this).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

KEY_ENV_PREFIX = "YMERA_LLM_KEY_"
SECRET_NAME_PREFIX = "ymera/llm/"


class ProviderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: Literal["openai", "bedrock"] | None = Field(
        default=None, description="'openai' (any OpenAI-compatible endpoint) or 'bedrock'; default: YMERA_LLM_PROVIDER")
    model: str | None = Field(default=None, min_length=1, max_length=200,
                              description="Model id; default: YMERA_LLM_MODEL")
    base_url: str | None = Field(
        default=None, max_length=500, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="OpenAI-compatible endpoint, e.g. http://ollama:11434/v1; default: YMERA_LLM_BASE_URL")
    api_key_env: str | None = Field(
        default=None, pattern=rf"^{KEY_ENV_PREFIX}[A-Z0-9_]+$",
        description=f"Name of the environment variable holding the API key (must start with {KEY_ENV_PREFIX})")
    api_key_secret_arn: str | None = Field(
        default=None, max_length=2048,
        pattern=rf"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{{12}}:secret:{SECRET_NAME_PREFIX}\S+$",
        description=f"Secrets Manager secret holding the API key (its name must start with {SECRET_NAME_PREFIX})")
    max_tokens: int = Field(default=1024, ge=1, le=200_000, description="Output tokens per model call")
    temperature: float = Field(default=0.2, ge=0, le=2)
    timeout_seconds: float = Field(default=30.0, gt=0, le=300, description="One attempt's timeout")
    max_total_tokens: int | None = Field(default=20_000, ge=1, description="Per-task cap on input+output tokens")
    # The consumer Lambda times out at 60 s: the default leaves room to record the outcome.
    max_wall_seconds: float = Field(default=50.0, gt=0, le=900, description="Per-task cap on time spent")

    @model_validator(mode="after")
    def _coherent(self) -> ProviderConfig:
        if self.api_key_env and self.api_key_secret_arn:
            raise ValueError("set api_key_env or api_key_secret_arn, not both")
        if self.provider == "bedrock" and (self.base_url or self.api_key_env or self.api_key_secret_arn):
            raise ValueError("bedrock uses the function's AWS role: base_url and api keys do not apply")
        return self
