"""Turns an agent's configuration into a provider endpoint with the operator's limits attached.

Built once per container (`Container.providers`): it owns the circuit breakers (remembered across
the tasks a warm function runs), the cached Bedrock clients, the key cache and the catalog.

Two kinds of endpoint (docs/providers.md):
- **operator endpoints** (the catalog, chalicelib.providers.catalog; `config.endpoint`, default
  "default"): the operator's key, sent only to that entry's base_url; models limited to the entry's;
  the entry's `max_tokens_per_task` caps the task; timeouts raised to YMERA_LLM_MIN_TIMEOUT_SECONDS;
  one breaker per entry that only the operator's timeout can open; the user's daily budget applies.
- **the user's own endpoint** (`config.base_url`): their stored key (`config.key`) or none; reached
  only through the outbound guard (chalicelib.net.outbound); one breaker per (endpoint, user).
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from chalicelib.net.outbound import OutboundPolicy, OutboundRefusedError
from chalicelib.observability import logger
from chalicelib.providers.catalog import DEFAULT_ALIAS, OPENAI_DEFAULT_BASE_URL, Catalog, CatalogEntry
from chalicelib.providers.config import ProviderConfig
from chalicelib.providers.errors import ProviderEndpointRefusedError, ProviderNotConfiguredError
from chalicelib.providers.keys import KeyResolver, key_unavailable
from chalicelib.providers.resilience import CircuitBreaker, RetryPolicy
from chalicelib.providers.session import Budget, Endpoint, LLMSession

if TYPE_CHECKING:
    from chalicelib.config import Settings
    from chalicelib.providers.usage import UsageLedger
    from chalicelib.providers.user_keys import UserKeyStore

NOT_CONFIGURED = (
    "no language-model provider is configured for this agent: pick one of the operator's endpoints with "
    "config.endpoint, or bring your own OpenAI-compatible endpoint with config.base_url and config.model "
    "(and config.key, a key stored with PUT /provider-keys/{name}); the operator configures endpoints with "
    "YMERA_LLM_ENDPOINTS, or the stage's default one with YMERA_LLM_PROVIDER and YMERA_LLM_MODEL (plus "
    "YMERA_LLM_BASE_URL and YMERA_LLM_API_KEY or YMERA_LLM_API_KEY_SECRET_ARN for an OpenAI-compatible endpoint)"
)
AGENT_KEYS = ["endpoint", "model", "base_url", "key"]
STAGE_KEYS = ["YMERA_LLM_ENDPOINTS", "YMERA_LLM_PROVIDER", "YMERA_LLM_MODEL", "YMERA_LLM_BASE_URL",
              "YMERA_LLM_API_KEY", "YMERA_LLM_API_KEY_SECRET_ARN"]
OWN = "own endpoint"


def wall_cap_seconds(function_timeout: float) -> float:
    """The most a task may spend on model calls: the function timeout minus room to record the outcome.

    The margin is 10% of the timeout, at least 10 s (a 60 s consumer keeps 50 s, as before; the 300 s
    provider consumers keep 270 s).
    """
    return max(1.0, function_timeout - max(10.0, 0.1 * function_timeout))


class Providers:
    def __init__(self, settings: Settings, *, environ: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 rng: Callable[[], float] | None = None,
                 bedrock_client_factory: Callable[[float], Any] | None = None,
                 secrets_client_factory: Callable[[], Any] | None = None,
                 usage: UsageLedger | None = None, user_keys: UserKeyStore | None = None,
                 outbound: OutboundPolicy | None = None, redis: Callable[[], Any] | None = None) -> None:
        from chalicelib.engines.intelligence import Gateway

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
        self.usage = usage
        self.user_keys = user_keys
        self.outbound = outbound or OutboundPolicy(allow_private=settings.outbound_private_allowed,
                                                   allow_http=settings.is_development)
        self._static_catalog = Catalog.from_settings(settings)  # a bad YMERA_LLM_ENDPOINTS fails the cold start
        #: every model call of every session goes through it: budget, accounting, the opt-in prompt cache.
        self.gateway = Gateway(settings, usage=usage, redis=redis)

    def catalog(self) -> Catalog:
        arn = self.settings.llm_endpoints_secret_arn
        if not arn:
            return self._static_catalog
        return Catalog.from_settings(self.settings, self.keys.secret_string(arn, "the endpoint catalog"))

    def is_configured(self, config: ProviderConfig) -> bool:
        """True when the agent names an endpoint, or a default exists; resolving may still fail loudly."""
        if config.base_url or config.endpoint:
            return True
        return self.catalog().get(DEFAULT_ALIAS) is not None

    def session(self, config: ProviderConfig, *, user_id: uuid.UUID | None = None,
                task_id: uuid.UUID | None = None) -> LLMSession:
        cap = wall_cap_seconds(self.settings.function_timeout_seconds)
        return LLMSession(self.resolve(config, user_id=user_id, task_id=task_id), config, policy=self.policy,
                          clock=self._clock, sleep=self._sleep, rng=self._rng,
                          max_wall_seconds=min(config.max_wall_seconds, cap), gateway=self.gateway,
                          user_id=user_id, task_id=task_id)

    def resolve(self, config: ProviderConfig, *, user_id: uuid.UUID | None = None,
                task_id: uuid.UUID | None = None) -> Endpoint:
        if config.base_url:
            return self._own(config, user_id)
        return self._catalog(config, user_id, task_id)

    # --- the user's own endpoint ------------------------------------------------------------------------------

    def _own(self, config: ProviderConfig, user_id: uuid.UUID | None) -> Endpoint:
        from chalicelib.providers.openai_compat import OpenAICompatibleProvider

        assert config.base_url is not None
        base = config.base_url.rstrip("/")
        try:
            self.outbound.check_url(base)  # the scheme now; addresses on connect
        except OutboundRefusedError as exc:
            raise ProviderEndpointRefusedError(f"config.base_url cannot be used: {exc.message}",
                                               {"reason": exc.details.get("reason")}) from exc
        if not config.model:
            raise ProviderNotConfiguredError("your own endpoint needs config.model", {"agent_config_keys": ["model"]})
        key = None
        if config.key:
            key = self.user_keys.get(user_id, config.key) if self.user_keys and user_id else None
            if key is None:
                raise key_unavailable(OWN)
        tenant = str(user_id) if user_id else "anonymous"
        provider = OpenAICompatibleProvider(base, key, policy=self.outbound, label=OWN)
        return Endpoint(provider, config.model, self.breaker(f"openai at {base} for {tenant}"),
                        alias=None, max_total_tokens=config.max_total_tokens, timeout=config.timeout_seconds,
                        identity=f"own:{base}")

    # --- the operator's endpoints -----------------------------------------------------------------------------

    def _catalog(self, config: ProviderConfig, user_id: uuid.UUID | None, task_id: uuid.UUID | None) -> Endpoint:
        catalog = self.catalog()
        alias = config.endpoint or DEFAULT_ALIAS
        entry = catalog.get(alias)
        if entry is None:
            if config.endpoint is None:
                raise ProviderNotConfiguredError(NOT_CONFIGURED, {"agent_config_keys": AGENT_KEYS,
                                                                  "environment": STAGE_KEYS})
            raise ProviderNotConfiguredError(f"there is no endpoint {alias!r}: config.endpoint must be one of "
                                             f"{catalog.aliases}", {"endpoints": catalog.aliases})
        if config.provider and config.provider != entry.provider:
            raise ProviderNotConfiguredError(
                f"the endpoint {alias!r} is {entry.provider}, not {config.provider}: drop config.provider or pick "
                "another endpoint", {"endpoint": alias, "provider": entry.provider})
        model = entry.model_for(config.model)
        if not model:
            raise ProviderNotConfiguredError(
                f"the endpoint {alias!r} has no default model: set config.model",
                {"agent_config_keys": ["model"], "environment": ["YMERA_LLM_MODEL"]})
        if entry.models and model not in entry.models:
            raise ProviderNotConfiguredError(
                f"the endpoint {alias!r} does not offer the model {model!r}: use one of {list(entry.models)}",
                {"endpoint": alias, "models": list(entry.models)})
        ceiling = min(config.max_total_tokens or entry.max_tokens_per_task, entry.max_tokens_per_task)
        timeout = max(config.timeout_seconds, self.settings.llm_min_timeout_seconds)
        budget = self._budget(user_id)
        if entry.provider == "bedrock":
            from chalicelib.providers.bedrock import BedrockProvider

            return Endpoint(BedrockProvider(self._bedrock_client_factory), model,
                            self.breaker(f"endpoint {alias} ({model})"), alias=alias, max_total_tokens=ceiling,
                            timeout=timeout, breaker_timeout_floor=entry.timeout_seconds, budget=budget)
        from chalicelib.providers.openai_compat import OpenAICompatibleProvider

        provider = OpenAICompatibleProvider(entry.url, self._entry_key(alias, entry), label=alias)
        return Endpoint(provider, model, self.breaker(f"endpoint {alias}"), alias=alias, max_total_tokens=ceiling,
                        timeout=timeout, breaker_timeout_floor=entry.timeout_seconds, budget=budget)

    def _entry_key(self, alias: str, entry: CatalogEntry) -> str | None:
        if entry.api_key:
            return entry.api_key
        if entry.api_key_env:
            return self.keys.from_env(entry.api_key_env, alias)
        secret = entry.secret_id(self.settings.stage)
        if secret:
            return self.keys.from_secret(secret, alias)
        if entry.url == OPENAI_DEFAULT_BASE_URL:
            logger.error("catalog endpoint for api.openai.com has no key", extra={"endpoint": alias})
            raise key_unavailable(alias)
        return None  # a keyless server the operator runs (Ollama, vLLM without auth)

    def _budget(self, user_id: uuid.UUID | None) -> Budget | None:
        limit = self.settings.llm_daily_token_budget_per_user
        if not limit or user_id is None or self.usage is None:
            return None
        from chalicelib.providers.usage import DailyBudget

        return DailyBudget(self.usage, limit, user_id)

    # --- shared state -----------------------------------------------------------------------------------------

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
