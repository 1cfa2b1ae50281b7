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
    max_task_attempts: int = 5
    #: external agents: how long a leased task stays with its worker without a heartbeat.
    lease_seconds: int = Field(default=60, ge=1, le=3600)
    #: a long-polling lease checks for new work this often.
    lease_poll_seconds: float = Field(default=0.5, gt=0, le=5)

    # Auth.
    jwt_secret: str = Field(default="", repr=False)
    jwt_issuer: str = "ymera"
    jwt_audience: str = "ymera-api"
    jwt_algorithm: Literal["HS256"] = "HS256"
    access_token_ttl_seconds: int = 15 * 60
    refresh_token_ttl_seconds: int = 7 * 24 * 3600
    bcrypt_rounds: int = Field(default=12, ge=4, le=16)
    #: when set, the signing secret is read from AWS Secrets Manager (once per container), not jwt_secret.
    jwt_secret_arn: str | None = None
    #: how long a user's state (active, role, token version) is cached in Redis for the per-request check.
    session_cache_ttl_seconds: int = Field(default=15 * 60, ge=1)

    # API behaviour.
    page_size_default: int = 50
    page_size_max: int = 200
    max_body_bytes: int = 1_000_000

    # Two-level cache (chalicelib.cache): per-namespace TTLs; the "sessions" namespace uses
    # session_cache_ttl_seconds. Versioned keys make updates visible at once; TTLs bound memory.
    cache_agents_ttl_seconds: int = Field(default=3600, ge=1)
    cache_task_results_ttl_seconds: int = Field(default=30 * 60, ge=1)
    #: entries held in each process's L1 (LRU beyond that).
    cache_l1_max_entries: int = Field(default=1024, ge=1)

    # Rate limiting: token buckets in Redis (capacity = burst, refill = tokens per second).
    # Failure modes are per bucket and fixed in chalicelib.ratelimit: general buckets fail open,
    # the login buckets fail closed.
    rate_limit_enabled: bool = True
    rate_limit_user_capacity: int = Field(default=120, ge=1)
    rate_limit_user_refill_per_second: float = Field(default=2.0, gt=0)
    rate_limit_ip_capacity: int = Field(default=60, ge=1)
    rate_limit_ip_refill_per_second: float = Field(default=1.0, gt=0)
    rate_limit_login_account_capacity: int = Field(default=5, ge=1)
    rate_limit_login_account_refill_per_second: float = Field(default=1 / 60, gt=0)
    rate_limit_login_ip_capacity: int = Field(default=20, ge=1)
    rate_limit_login_ip_refill_per_second: float = Field(default=0.2, gt=0)
    #: after a Redis failure, skip Redis for this long instead of paying its timeout on every request.
    redis_breaker_seconds: float = Field(default=5.0, ge=0)

    # Monitoring. A static bearer token lets Prometheus scrape /metrics without logging in.
    metrics_token: str = Field(default="", repr=False)
    #: request metrics are buffered per container and written to Redis when the oldest buffered sample is this
    #: old (checked as requests arrive; see chalicelib.services.request_metrics). 0 = every request at once.
    request_metrics_flush_seconds: float = Field(default=1.0, ge=0)

    # Language-model provider for the stage (chalicelib.providers); an agent's config overrides any of it.
    #: "" = none: provider-backed tasks fail with PROVIDER_NOT_CONFIGURED unless their agent names one.
    llm_provider: Literal["", "openai", "bedrock"] = ""
    llm_model: str = ""
    #: OpenAI-compatible endpoint (default https://api.openai.com/v1); the stage key is sent only there.
    llm_base_url: str = ""
    llm_api_key: str = Field(default="", repr=False)
    #: read once per container (cached 5 min) instead of llm_api_key; plain key or JSON {"api_key": ...}.
    llm_api_key_secret_arn: str | None = None
    #: attempts per model call (retryable errors only), full-jitter backoff between base and max seconds.
    llm_max_attempts: int = Field(default=3, ge=1, le=10)
    llm_retry_base_seconds: float = Field(default=0.5, ge=0)
    llm_retry_max_seconds: float = Field(default=8.0, ge=0)
    #: circuit breaker per endpoint: open after this many consecutive outages, half-open after the cool-down.
    llm_breaker_failure_threshold: int = Field(default=5, ge=1)
    llm_breaker_reset_seconds: float = Field(default=30.0, gt=0)

    # Learning, heartbeats and alerts (agent types learning / monitoring, functions/monitor.py).
    #: feedback older than this counts half as much in an agent's quality estimate.
    quality_half_life_days: float = Field(default=30.0, gt=0)
    #: an agent that heartbeats and has not for this long is marked offline.
    heartbeat_stale_seconds: int = Field(default=300, ge=1)
    #: the SNS topic for alerts; unset = look up `<queue_prefix>-alerts` (what infra creates) by name.
    alert_topic_arn: str | None = None
    #: the same standing alert (a dependency down, a DLQ not empty) is re-sent at most this often.
    alert_cooldown_seconds: int = Field(default=900, ge=0)

    # Consumers and orchestration (issue 7 §3, docs/consumers.md): each record commits on its own.
    #: a consumer starts another record only while this much of its invocation remains (the expected time of
    #: one record, agent run plus commits); it raises the reserve to twice the slowest record it has run.
    consumer_record_reserve_seconds: float = Field(default=10.0, ge=0, le=900)
    #: the longest chain of parent tasks (parent_task_id) under which an orchestrator may still start steps.
    orchestrator_max_depth: int = Field(default=3, ge=1, le=10)
    #: the most tasks one root task may have below it, across every level.
    orchestrator_max_descendants: int = Field(default=100, ge=1, le=10_000)

    @field_validator("stage")
    @classmethod
    def _stage_lower(cls, value: str) -> str:
        return value.strip().lower()

    @property
    def is_development(self) -> bool:
        return self.stage in DEV_STAGES

    @model_validator(mode="after")
    def _check_secrets(self) -> Settings:
        if not self.database_url:
            raise ValueError("DATABASE_URL is required (postgresql+psycopg://... or sqlite:///...)")
        if self.jwt_secret_arn:  # length is checked when the secret is fetched (chalicelib.auth.secrets)
            return self
        # Consumers and scheduled functions never sign tokens, so an absent secret is fine here (the API
        # checks for one with `require_token_secret`); a weak one is refused wherever it appears.
        if self.jwt_secret and len(self.jwt_secret.encode()) < MIN_SECRET_BYTES and not self.is_development:
            raise ValueError(
                f"YMERA_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes outside development "
                f"(stage={self.stage!r})"
            )
        return self

    def require_token_secret(self) -> None:
        """For code that signs or verifies tokens (the API): a secret must be configured."""
        if not self.jwt_secret and not self.jwt_secret_arn:
            raise ConfigError("YMERA_JWT_SECRET or YMERA_JWT_SECRET_ARN is required by the API "
                              "(the local runtime generates a secret for you)")

    @model_validator(mode="after")
    def _check_metrics_token(self) -> Settings:
        # The scrape token bypasses login: a guessable one would publish every metric.
        if self.metrics_token and len(self.metrics_token.encode()) < MIN_SECRET_BYTES and not self.is_development:
            raise ValueError(f"YMERA_METRICS_TOKEN must be empty or at least {MIN_SECRET_BYTES} bytes")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    try:
        return Settings()
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        raise ConfigError(str(exc)) from exc
