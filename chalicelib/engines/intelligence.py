"""The intelligence engine: the gateway every provider-backed agent's model call goes through, and the report
of what those calls cost.

`Gateway.complete` is called by `chalicelib.providers.session.LLMSession.complete` for every call, in order:
1. **prompt cache** (opt-in per agent: `config.cache_ttl_seconds`, capped by YMERA_LLM_CACHE_MAX_TTL_SECONDS):
   the key is a SHA-256 of the endpoint (alias, or own base URL), model, system prompt, messages, requested
   output tokens and temperature, under a per-user Redis prefix — one user's cached answer is never another's.
   A hit answers without a provider call and charges nothing;
2. **budget**: on operator endpoints, the user's daily token budget (chalicelib.providers.usage) is checked
   before the call (BUDGET_EXCEEDED) and clips its output tokens;
3. the provider call (retries, breaker, deadline: the session's);
4. **accounting**: one `provider_usage` row per call, hit or not — endpoint, model, token split, latency,
   attempts, what it charged the budget; then the answer is cached when the agent opted in, unless it was cut
   short by an output budget clipped below the requested one (then it is not the answer to the key).
Redis trouble never fails a call: the cache degrades to misses (logged).

`IntelligenceEngine.run` reports the caller's usage over a range, by endpoint and model, with cache hit rates
(chalicelib.engines.usage_report).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from chalicelib.engines import Engine, EngineContext
from chalicelib.observability import logger
from chalicelib.providers.base import Completion, CompletionRequest, Usage
from chalicelib.providers.errors import BudgetExceededError
from chalicelib.providers.usage import CallRecord

if TYPE_CHECKING:
    from chalicelib.config import Settings
    from chalicelib.providers.session import Endpoint
    from chalicelib.providers.usage import UsageLedger

CACHE_NAMESPACE = "llmcache"


def cache_key(prefix: str, user_id: uuid.UUID, endpoint: Endpoint, request: CompletionRequest,
              requested_max_tokens: int) -> str:
    material = json.dumps({"endpoint": endpoint.identity or endpoint.label, "model": request.model,
                           "system": request.system, "messages": [[m.role, m.content] for m in request.messages],
                           "max_tokens": requested_max_tokens, "temperature": request.temperature},
                          sort_keys=True, separators=(",", ":"))
    return f"{prefix}{CACHE_NAMESPACE}:{user_id}:{hashlib.sha256(material.encode()).hexdigest()}"


def _encode(c: Completion) -> str:
    return json.dumps({"text": c.text, "model": c.model, "provider": c.provider, "finish_reason": c.finish_reason,
                       "usage": [c.usage.input_tokens, c.usage.output_tokens, c.usage.total_tokens, c.usage.estimated]},
                      separators=(",", ":"))


def _decode(raw: bytes | str, latency_ms: float) -> Completion:
    data = json.loads(raw)
    i, o, t, est = data["usage"]
    return Completion(text=data["text"], model=data["model"], usage=Usage(i, o, t, bool(est)),
                      latency_ms=round(latency_ms, 3), provider=data["provider"], finish_reason=data["finish_reason"],
                      attempts=0, cached=True)


class Gateway:
    def __init__(self, settings: Settings, *, usage: UsageLedger | None = None,
                 redis: Callable[[], Any] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.usage = usage
        self._redis = redis or (lambda: None)
        self._clock = clock
        #: after a Redis error the cache is skipped this long (YMERA_REDIS_BREAKER_SECONDS), so an outage costs
        #: one timeout per warm function, not one per model call.
        self._down_until = 0.0

    def complete(self, endpoint: Endpoint, request: CompletionRequest, *, user_id: uuid.UUID | None,
                 task_id: uuid.UUID | None, requested_max_tokens: int, prompt_tokens: int,
                 cache_ttl_seconds: int | None, call: Callable[[CompletionRequest], Completion]) -> Completion:
        ttl = min(cache_ttl_seconds or 0, self.settings.llm_cache_max_ttl_seconds)
        key = (cache_key(self.settings.redis_key_prefix, user_id, endpoint, request, requested_max_tokens)
               if ttl > 0 and user_id is not None else None)
        if key is not None:
            hit = self._cache_get(key)
            if hit is not None:
                self._record(user_id, task_id, endpoint, hit, charged=0)
                return hit
        budget = endpoint.budget
        if budget is not None:
            left = budget.remaining()
            if prompt_tokens >= left:
                raise BudgetExceededError(
                    f"your daily token budget on the platform's endpoints is spent ({budget.limit} tokens a day, "
                    f"{max(0, left)} left; the next call needs about {prompt_tokens}): it resets at 00:00 UTC",
                    {"limit": budget.limit, "remaining": max(0, left), "estimated_prompt_tokens": prompt_tokens})
            if request.max_tokens > left - prompt_tokens:
                request = replace(request, max_tokens=left - prompt_tokens)
        completion = call(request)
        self._record(user_id, task_id, endpoint, completion,
                     charged=completion.usage.total_tokens if budget is not None else 0)
        # An answer cut short by a clipped output budget is not the answer to the key's parameters; one that
        # finished on its own is, whatever the clip.
        if key is not None and (completion.finish_reason != "length" or request.max_tokens >= requested_max_tokens):
            self._cache_put(key, completion, ttl)
        return completion

    def _record(self, user_id: uuid.UUID | None, task_id: uuid.UUID | None, endpoint: Endpoint, c: Completion, *,
                charged: int) -> None:
        if self.usage is None or user_id is None:
            return  # no database (unit tests of the providers) or nobody to account to
        self.usage.record(CallRecord(
            user_id=user_id, task_id=task_id, endpoint=endpoint.label, model=endpoint.model, charged_tokens=charged,
            input_tokens=c.usage.input_tokens, output_tokens=c.usage.output_tokens,
            total_tokens=c.usage.total_tokens, latency_ms=c.latency_ms, attempts=c.attempts, cached=c.cached))

    def _client(self) -> Any:
        return None if self._clock() < self._down_until else self._redis()

    def _trip(self, exc: Exception, what: str) -> None:
        self._down_until = self._clock() + self.settings.redis_breaker_seconds
        logger.warning(f"prompt cache unavailable: {what}", extra={"reason": type(exc).__name__})

    def _cache_get(self, key: str) -> Completion | None:
        client = self._client()
        if client is None:
            return None
        import redis

        started = self._clock()
        try:
            raw = client.get(key)
        except redis.RedisError as exc:
            self._trip(exc, "calling the model")
            return None
        return _decode(raw, (self._clock() - started) * 1000) if raw is not None else None

    def _cache_put(self, key: str, completion: Completion, ttl: int) -> None:
        client = self._client()
        if client is None:
            return
        import redis

        value = _encode(completion)
        if len(value.encode()) > self.settings.llm_cache_max_entry_bytes:
            return
        try:
            client.set(key, value, ex=ttl)
        except redis.RedisError as exc:
            self._trip(exc, "answer not cached")


class IntelligenceEngine(Engine):
    name = "intelligence"
    description = ("Your language-model usage through the platform's gateway over a time range: calls, tokens "
                   "(input, output, charged to your daily budget), latency and prompt-cache hit rates by endpoint "
                   "and model, and what is left of today's budget.")
    input_schema = {
        "type": "object", "additionalProperties": False,
        "properties": {
            "from": {"type": "string", "format": "date-time", "description": "start (inclusive); default: `days` ago"},
            "to": {"type": "string", "format": "date-time", "description": "end (exclusive); default: now"},
            "days": {"type": "integer", "minimum": 1, "maximum": 366, "default": 7},
        },
    }
    output_schema = {
        "type": "object", "required": ["range", "totals", "by_endpoint_model", "budget"],
        "properties": {"range": {"type": "object"}, "totals": {"type": "object"},
                       "by_endpoint_model": {"type": "array"}, "budget": {"type": "object"}},
    }
    example = {"days": 7}

    def run(self, ctx: EngineContext, input: dict[str, Any]) -> dict[str, Any]:  # noqa: A002 - the contract's name
        from chalicelib.engines.usage_report import report

        return report(ctx, input)
