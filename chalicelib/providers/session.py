"""One task's conversation with its provider: limits, and what it cost.

A session starts its wall-time clock when the agent opens it and counts
every token of every call. Before a call, the output budget is clipped to
the tokens left; after it, a task over `max_total_tokens` fails with
TOKEN_LIMIT_EXCEEDED (the answer is discarded: the limit is a promise to
whoever pays for it). Running out of `max_wall_seconds` fails it with
TIME_LIMIT_EXCEEDED.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from chalicelib.providers.base import Completion, CompletionRequest, Message, Provider, Usage, estimate_tokens
from chalicelib.providers.config import ProviderConfig
from chalicelib.providers.errors import TimeLimitExceededError, TokenLimitExceededError
from chalicelib.providers.resilience import CircuitBreaker, RetryPolicy, call_with_retries


@dataclass(frozen=True)
class Endpoint:
    """A resolved provider: who answers, with which model, behind which breaker."""

    provider: Provider
    model: str
    breaker: CircuitBreaker
    base_url: str | None = None

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"name": self.provider.name, "model": self.model}
        if self.base_url:
            info["base_url"] = self.base_url
        return info


class LLMSession:
    def __init__(self, endpoint: Endpoint, config: ProviderConfig, *, policy: RetryPolicy,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 rng: Callable[[], float] | None = None) -> None:
        self.endpoint = endpoint
        self.config = config
        self._policy = policy
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self.started = clock()
        self.deadline = self.started + config.max_wall_seconds
        self.usage = Usage()
        self.calls = 0
        self.attempts = 0
        self.latency_ms = 0.0

    def complete(self, messages: str | Sequence[Message], *, system: str | None = None,
                 max_tokens: int | None = None) -> Completion:
        if isinstance(messages, str):
            messages = (Message("user", messages),)
        limit = self.config.max_total_tokens
        out_tokens = max_tokens or self.config.max_tokens
        if limit is not None:
            # A prompt that alone would blow the budget is refused before it is paid for.
            prompt = estimate_tokens((system or "") + "".join(m.content for m in messages))
            if self.usage.total_tokens + prompt >= limit:
                raise self._token_error(prompt)
            out_tokens = min(out_tokens, limit - self.usage.total_tokens - prompt)
        request = CompletionRequest(messages=tuple(messages), model=self.endpoint.model, system=system,
                                    max_tokens=out_tokens, temperature=self.config.temperature,
                                    timeout=self.config.timeout_seconds)
        try:
            completion = call_with_retries(self.endpoint.provider, request, breaker=self.endpoint.breaker,
                                           policy=self._policy, deadline=self.deadline, clock=self._clock,
                                           sleep=self._sleep, rng=self._rng)
        except TimeLimitExceededError as exc:
            exc.details.update(limit_seconds=self.config.max_wall_seconds,
                               elapsed_seconds=round(self._clock() - self.started, 3), usage=self.usage.as_dict())
            raise
        self.calls += 1
        self.attempts += completion.attempts
        self.usage = self.usage + completion.usage
        self.latency_ms = round(self.latency_ms + completion.latency_ms, 3)
        if limit is not None and self.usage.total_tokens > limit:
            raise self._token_error()
        return completion

    def _token_error(self, next_prompt: int | None = None) -> TokenLimitExceededError:
        limit = self.config.max_total_tokens or 0  # only called when there is a limit
        details = {"limit": limit, "usage": self.usage.as_dict(), "provider": self.endpoint.provider.name,
                   "model": self.endpoint.model}
        if next_prompt is not None:
            details["estimated_prompt_tokens"] = next_prompt
            return TokenLimitExceededError(
                f"the next model call needs about {next_prompt} prompt tokens, and the task has "
                f"{limit - self.usage.total_tokens} left of its limit of {limit} (config.max_total_tokens)", details)
        return TokenLimitExceededError(
            f"the task used {self.usage.total_tokens} tokens, over its limit of {limit} (config.max_total_tokens)",
            details)

    def metrics(self) -> dict[str, Any]:
        """What `task_results.metrics` records about the model calls."""
        return {"provider": self.endpoint.provider.name, "model": self.endpoint.model,
                "provider_calls": self.calls, "provider_attempts": self.attempts,
                "provider_latency_ms": self.latency_ms, **self.usage.as_dict()}
