"""Typed settings, loaded once per container and checked at cold start.

Every knob comes from the environment (Lambda configuration, `.chalice/config.json`
for non-secrets, or the local runtime). Nothing else in chalicelib reads
`os.environ`; services receive the values they need.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_STAGES = frozenset({"development", "local", "test"})
MIN_SECRET_BYTES = 32


class ConfigError(RuntimeError):
    """The environment does not describe a runnable deployment."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="YMERA_", extra="ignore", frozen=True)

    stage: str = "development"
    version: str = "0.1.0"

    # Data stores. `database_url` is required; the local runtime fills it in.
    database_url: str = Field(default="", validation_alias="DATABASE_URL")
    redis_url: str = Field(default="", validation_alias="REDIS_URL")
    #: every Redis key starts with this, so stages (and test sessions) can share a server.
    redis_key_prefix: str = "ymera:"
    db_pool_size: int = 5
    db_max_overflow: int = 5
    db_pool_timeout: float = 10.0
    db_pool_recycle: int = 3600

    # AWS wiring. Queue names are `<queue_prefix>-agent-<type>`.
    aws_region: str = Field(default="us-east-1", validation_alias="AWS_DEFAULT_REGION")
    aws_endpoint_url: str | None = Field(default=None, validation_alias="AWS_ENDPOINT_URL")
    queue_prefix: str = "ymera-dev"
    publish_timeout_seconds: float = 2.0
    consumer_lease_seconds: int = 360
    max_task_attempts: int = 5

    # Auth.
    jwt_secret: str = Field(default="", repr=False)
    jwt_issuer: str = "ymera"
    jwt_audience: str = "ymera-api"
    jwt_algorithm: Literal["HS256"] = "HS256"
    access_token_ttl_seconds: int = 15 * 60
    refresh_token_ttl_seconds: int = 7 * 24 * 3600
    bcrypt_rounds: int = Field(default=12, ge=4, le=16)

    # API behaviour.
    page_size_default: int = 50
    page_size_max: int = 200
    max_body_bytes: int = 1_000_000

    @field_validator("stage")
    @classmethod
    def _stage_lower(cls, value: str) -> str:
        return value.strip().lower()

    @property
    def is_development(self) -> bool:
        return self.stage in DEV_STAGES

    @model_validator(mode="after")
    def _check_secrets(self) -> "Settings":
        if not self.database_url:
            raise ValueError("DATABASE_URL is required (postgresql+psycopg://... or sqlite:///...)")
        if len(self.jwt_secret.encode()) < MIN_SECRET_BYTES and not self.is_development:
            raise ValueError(
                f"YMERA_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes outside development "
                f"(stage={self.stage!r})"
            )
        if not self.jwt_secret:
            raise ValueError("YMERA_JWT_SECRET is required (the local runtime generates one for you)")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    try:
        return Settings()
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        raise ConfigError(str(exc)) from exc
