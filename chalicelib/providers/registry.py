"""Turns an agent's configuration (plus the stage's YMERA_LLM_* settings) into a provider.

Built once per container (`Container.providers`): it owns the circuit
breakers (one per endpoint, so an outage is remembered across the tasks a
warm function runs), the cached Bedrock clients and the API-key cache.

Precedence: the agent's config, then the stage. The stage's API key is only
ever sent to the stage's own endpoint — an agent that points `base_url`
elsewhere must name its own key — so no agent can redirect it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from chalicelib.providers.config import ProviderConfig
from chalicelib.providers.errors import ProviderNotConfiguredError
from chalicelib.providers.keys import KeyResolver
from chalicelib.providers.resilience import CircuitBreaker, RetryPolicy
from chalicelib.providers.session import Endpoint, LLMSession

if TYPE_CHECKING:
    from chalicelib.config import Settings

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"

NOT_CONFIGURED = (
    "no language-model provider is configured for this agent: set the agent's config.provider ('openai' or "
    "'bedrock') and config.model (for an OpenAI-compatible endpoint also config.base_url and config.api_key_env "
    "or config.api_key_secret_arn), or the stage's YMERA_LLM_PROVIDER and YMERA_LLM_MODEL (plus "
    "YMERA_LLM_BASE_URL and YMERA_LLM_API_KEY or YMERA_LLM_API_KEY_SECRET_ARN for an OpenAI-compatible endpoint)"
)
AGENT_KEYS = ["provider", "model", "base_url", "api_key_env", "api_key_secret_arn"]
STAGE_KEYS = ["YMERA_LLM_PROVIDER", "YMERA_LLM_MODEL", "YMERA_LLM_BASE_URL", "YMERA_LLM_API_KEY",
              "YMERA_LLM_API_KEY_SECRET_ARN"]


class Providers:
    def __init__(self, settings: Settings, *, environ: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 rng: Callable[[], float] | None = None,
                 bedrock_client_factory: Callable[[float], Any] | None = None,
                 secrets_client_factory: Callable[[], Any] | None = None) -> None:
        self.settings = settings
        self.policy = RetryPolicy(settings.llm_max_attempts, settings.llm_retry_base_seconds,
                                  settings.llm_retry_max_seconds)
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._lock = threading.Lock()
        self._breakers: dict[str, CircuitBreaker] = {}
        self._bedrock_clients: dict[int, Any] = {}
        self._bedrock_client_factory = bedrock_client_factory or self._bedrock_client
        self.keys = KeyResolver(secrets_client_factory or self._secrets_client, environ, clock)

    def is_configured(self, config: ProviderConfig) -> bool:
        """True when some provider is named (by the agent or the stage); resolving may still fail loudly."""
        return bool(config.provider or self.settings.llm_provider)

    def session(self, config: ProviderConfig) -> LLMSession:
        return LLMSession(self.resolve(config), config, policy=self.policy, clock=self._clock, sleep=self._sleep,
                          rng=self._rng)

    def resolve(self, config: ProviderConfig) -> Endpoint:
        s = self.settings
        name = config.provider or s.llm_provider
        if not name:
            raise ProviderNotConfiguredError(NOT_CONFIGURED, {"agent_config_keys": AGENT_KEYS,
                                                              "environment": STAGE_KEYS})
        model = config.model or (s.llm_model if name == s.llm_provider else None)
        if not model:
            raise ProviderNotConfiguredError(
                f"the {name} provider has no model: set the agent's config.model or YMERA_LLM_MODEL",
                {"agent_config_keys": ["model"], "environment": ["YMERA_LLM_MODEL"]})
        if name == "bedrock":
            from chalicelib.providers.bedrock import BedrockProvider

            if config.base_url or config.api_key_env or config.api_key_secret_arn:
                raise ProviderNotConfiguredError(
                    "the stage's provider is bedrock, which uses the function's AWS role: base_url and API keys "
                    "in the agent's config apply to config.provider 'openai' only", {"agent_config_keys": ["provider"]})

            region = s.aws_region
            return Endpoint(BedrockProvider(self._bedrock_client_factory), model,
                            self.breaker(f"bedrock {model} in {region}"))
        return self._openai(config, model)

    def _openai(self, config: ProviderConfig, model: str) -> Endpoint:
        from chalicelib.providers.openai_compat import OpenAICompatibleProvider

        s = self.settings
        stage_base = (s.llm_base_url or OPENAI_DEFAULT_BASE_URL).rstrip("/") if s.llm_provider == "openai" else None
        base = (config.base_url or stage_base or OPENAI_DEFAULT_BASE_URL).rstrip("/")
        key: str | None = None
        if config.api_key_env:
            key = self.keys.from_env(config.api_key_env, "config.api_key_env")
        elif config.api_key_secret_arn:
            key = self.keys.from_secret(config.api_key_secret_arn, "config.api_key_secret_arn")
        elif base == stage_base:
            if s.llm_api_key:
                key = s.llm_api_key
            elif s.llm_api_key_secret_arn:
                key = self.keys.from_secret(s.llm_api_key_secret_arn, "YMERA_LLM_API_KEY_SECRET_ARN")
        if key is None and base == OPENAI_DEFAULT_BASE_URL:
            raise ProviderNotConfiguredError(
                f"{base} needs an API key: set the agent's config.api_key_env or config.api_key_secret_arn, or "
                "the stage's YMERA_LLM_API_KEY or YMERA_LLM_API_KEY_SECRET_ARN",
                {"agent_config_keys": ["api_key_env", "api_key_secret_arn"],
                 "environment": ["YMERA_LLM_API_KEY", "YMERA_LLM_API_KEY_SECRET_ARN"]})
        return Endpoint(OpenAICompatibleProvider(base, key), model, self.breaker(f"openai at {base}"), base)

    def breaker(self, key: str) -> CircuitBreaker:
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is None:
                breaker = CircuitBreaker(key, self.settings.llm_breaker_failure_threshold,
                                         self.settings.llm_breaker_reset_seconds, self._clock)
                self._breakers[key] = breaker
            return breaker

    def breakers(self) -> list[dict[str, Any]]:
        with self._lock:
            return [b.snapshot() for b in self._breakers.values()]

    def _bedrock_client(self, timeout: float) -> Any:
        # One client per whole-second timeout: botocore fixes timeouts per client, and clients are costly.
        bucket = max(1, math.ceil(timeout))
        with self._lock:
            client = self._bedrock_clients.get(bucket)
            if client is None:
                import boto3
                from botocore.config import Config

                client = boto3.client("bedrock-runtime", region_name=self.settings.aws_region,
                                      endpoint_url=self.settings.aws_endpoint_url,
                                      config=Config(connect_timeout=min(5, bucket), read_timeout=bucket,
                                                    retries={"total_max_attempts": 1}))
                self._bedrock_clients[bucket] = client
            return client

    def _secrets_client(self) -> Any:
        import boto3

        return boto3.client("secretsmanager", region_name=self.settings.aws_region,
                            endpoint_url=self.settings.aws_endpoint_url)
