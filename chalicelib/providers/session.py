"""One task's conversation with its provider: limits, and what it cost.

A session starts its wall-time clock when the agent opens it and counts
every token of every call. Before a call, the output budget is clipped to
the tokens left; after it, a task over `max_total_tokens` fails with
TOKEN_LIMIT_EXCEEDED (the answer is discarded: the limit is a promise to
whoever pays for it). Running out of `max_wall_seconds` fails it with
TIME_LIMIT_EXCEEDED.

The endpoint carries the operator's limits (chalicelib.providers.registry): its per-task token ceiling
(the config can only lower it), the attempt timeout actually used, and — for operator endpoints — the
user's daily budget. Every call goes through the intelligence gateway (chalicelib.engines.intelligence),
which checks that budget before the call (BUDGET_EXCEEDED), answers from the opt-in prompt cache when it
can, and records each call's usage; an answer from the cache costs the task no tokens.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from chalicelib.providers.base import Completion, CompletionRequest, Message, Provider, Usage, estimate_tokens
from chalicelib.providers.config import ProviderConfig
from chalicelib.providers.errors import TimeLimitExceededError, TokenLimitExceededError
from chalicelib.providers.resilience import CircuitBreaker, RetryPolicy, call_with_retries


class Budget(Protocol):
    """A user's daily token allowance on operator endpoints (chalicelib.providers.usage)."""

    limit: int

    def remaining(self) -> int: ...


class Gateway(Protocol):
    """Where a session's model calls go (chalicelib.engines.intelligence.Gateway)."""

    def complete(self, endpoint: Endpoint, request: CompletionRequest, *, user_id: uuid.UUID | None,
                 task_id: uuid.UUID | None, requested_max_tokens: int, prompt_tokens: int,
                 cache_ttl_seconds: int | None, call: Callable[[CompletionRequest], Completion]) -> Completion: ...


@dataclass(frozen=True)
class Endpoint:
    """A resolved provider: who answers, with which model, behind which breaker."""

    provider: Provider
    model: str
    breaker: CircuitBreaker
    #: the catalog alias, or None for the user's own endpoint.
    alias: str | None = None
    #: the per-task token ceiling (None = none).
    max_total_tokens: int | None = None
    #: one attempt's timeout.
    timeout: float = 30.0
    #: only timeouts of attempts given at least this long count towards the breaker.
    breaker_timeout_floor: float = 0.0
    #: the user's daily budget, for operator endpoints (None = not metered).
    budget: Budget | None = None
    #: what identifies the endpoint in prompt-cache keys: the alias, or "own:<base url>".
    identity: str = ""

    @property
    def label(self) -> str:
        """The endpoint as usage accounting names it: the alias, or "own"."""
        return self.alias or "own"

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"name": self.provider.name, "model": self.model}
        info["endpoint"] = self.alias if self.alias else "own"
        return info


class LLMSession:
    def __init__(self, endpoint: Endpoint, config: ProviderConfig, *, policy: RetryPolicy,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 rng: Callable[[], float] | None = None, max_wall_seconds: float | None = None,
                 gateway: Gateway, user_id: uuid.UUID | None = None, task_id: uuid.UUID | None = None) -> None:
        self.endpoint = endpoint
        self.config = config
        self._policy = policy
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self.started = clock()
        #: the config's budget, capped by the registry below the function timeout.
        self.max_wall_seconds = max_wall_seconds if max_wall_seconds is not None else config.max_wall_seconds
        self.deadline = self.started + self.max_wall_seconds
        self.usage = Usage()
        self.calls = 0
        self.attempts = 0
        self.latency_ms = 0.0
        self.cache_hits = 0
        self.gateway = gateway
        self.user_id = user_id
        self.task_id = task_id
        #: called before each model call (the task's cancellation check: it raises to stop the agent).
        self.before_call: Callable[[], None] | None = None

    def complete(self, messages: str | Sequence[Message], *, system: str | None = None,
                 max_tokens: int | None = None) -> Completion:
        if self.before_call is not None:
            self.before_call()  # a cancelled task pays for no further model call
        if isinstance(messages, str):
            messages = (Message("user", messages),)
        limit = self.endpoint.max_total_tokens
        requested = out_tokens = max_tokens or self.config.max_tokens
        prompt = estimate_tokens((system or "") + "".join(m.content for m in messages))
        if limit is not None:
            # A prompt that alone would blow the budget is refused before it is paid for.
            if self.usage.total_tokens + prompt >= limit:
                raise self._token_error(prompt)
            out_tokens = min(out_tokens, limit - self.usage.total_tokens - prompt)
        request = CompletionRequest(messages=tuple(messages), model=self.endpoint.model, system=system,
                                    max_tokens=out_tokens, temperature=self.config.temperature,
                                    timeout=self.endpoint.timeout)
        try:
            completion = self.gateway.complete(self.endpoint, request, user_id=self.user_id, task_id=self.task_id,
                                               requested_max_tokens=requested, prompt_tokens=prompt,
                                               cache_ttl_seconds=self.config.cache_ttl_seconds, call=self._call)
        except TimeLimitExceededError as exc:
            exc.details.update(limit_seconds=self.max_wall_seconds,
                               elapsed_seconds=round(self._clock() - self.started, 3), usage=self.usage.as_dict())
            raise
        self.calls += 1
        if completion.cached:
            self.cache_hits += 1
            return completion  # nothing was spent: the task's tokens and attempts stay as they were
        self.attempts += completion.attempts
        self.usage = self.usage + completion.usage
        self.latency_ms = round(self.latency_ms + completion.latency_ms, 3)
        if limit is not None and self.usage.total_tokens > limit:
            raise self._token_error()
        return completion

    def _call(self, request: CompletionRequest) -> Completion:
        """One provider call with retries and the breaker, within the task's deadline (the gateway calls it)."""
        return call_with_retries(self.endpoint.provider, request, breaker=self.endpoint.breaker, policy=self._policy,
                                 deadline=self.deadline, clock=self._clock, sleep=self._sleep, rng=self._rng,
                                 breaker_timeout_floor=self.endpoint.breaker_timeout_floor)

    def _token_error(self, next_prompt: int | None = None) -> TokenLimitExceededError:
        limit = self.endpoint.max_total_tokens or 0  # only called when there is a limit
        details = {"limit": limit, "usage": self.usage.as_dict(), "provider": self.endpoint.provider.name,
                   "model": self.endpoint.model}
        if next_prompt is not None:
            details["estimated_prompt_tokens"] = next_prompt
            return TokenLimitExceededError(
                f"the next model call needs about {next_prompt} prompt tokens, and the task has "
                f"{limit - self.usage.total_tokens} left of its limit of {limit} (config.max_total_tokens, capped by "
                f"the endpoint's max_tokens_per_task)", details)
        return TokenLimitExceededError(
            f"the task used {self.usage.total_tokens} tokens, over its limit of {limit} (config.max_total_tokens, "
            "capped by the endpoint's max_tokens_per_task)",
            details)

    def metrics(self) -> dict[str, Any]:
        """What `task_results.metrics` records about the model calls."""
        metrics: dict[str, Any] = {"provider": self.endpoint.provider.name, "model": self.endpoint.model,
                                   "provider_calls": self.calls, "provider_attempts": self.attempts,
                                   "provider_latency_ms": self.latency_ms, **self.usage.as_dict()}
        if self.cache_hits:
            metrics["provider_cache_hits"] = self.cache_hits
        return metrics
