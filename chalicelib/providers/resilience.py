"""Retries with backoff and a circuit breaker around single provider attempts.

Retries: only errors marked `retryable` (timeouts, connection errors, 429,
5xx), at most `max_attempts` attempts, sleeping a "full jitter" delay —
uniform in [0, min(max_delay, base_delay * 2**(n-1))] — so many workers that
failed together do not retry in lockstep. A Retry-After from the endpoint is
honoured (capped at max_delay). No attempt starts after the task's deadline,
and each attempt's timeout is shortened to fit before it.

Circuit breaker (one per endpoint, per container, shared by threads):
closed --N consecutive outage failures--> open --reset_timeout--> half-open,
which lets exactly one trial call through: success closes it, failure
re-opens it for another reset_timeout. While open, calls fail at once with
PROVIDER_UNAVAILABLE instead of waiting on a dead endpoint. Only outages
count: an endpoint that answers 400 is up. And only the operator's idea of a timeout counts: a timeout
of an attempt that was given less than `breaker_timeout_floor` seconds (a user's short timeout_seconds,
or an attempt cut short by the task's deadline) says nothing about a shared endpoint's health.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from chalicelib.providers.base import Completion, CompletionRequest, Provider
from chalicelib.providers.errors import (
    CircuitOpenError,
    ProviderError,
    ProviderTimeoutError,
    TimeLimitExceededError,
)

Clock = Callable[[], float]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    def __init__(self, name: str, failure_threshold: int = 5, reset_timeout: float = 30.0,
                 clock: Clock = time.monotonic) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False

    @property
    def state(self) -> str:
        with self._lock:
            return self._state

    def before_call(self) -> None:
        """Let a call through, or raise CircuitOpenError (PROVIDER_UNAVAILABLE) at once."""
        with self._lock:
            if self._state == CLOSED:
                return
            now = self._clock()
            if self._state == OPEN and now - self._opened_at >= self.reset_timeout:
                self._state = HALF_OPEN
                self._trial_in_flight = True
                return
            if self._state == HALF_OPEN and not self._trial_in_flight:
                self._trial_in_flight = True
                return
            retry_in = max(0.0, self.reset_timeout - (now - self._opened_at))
        raise CircuitOpenError(
            f"the language-model provider {self.name} is failing; calls are suspended for a cool-down",
            {"provider": self.name, "circuit": "open", "retry_in_seconds": round(retry_in, 3)},
        )

    def record_success(self) -> None:
        with self._lock:
            self._state = CLOSED
            self._failures = 0
            self._trial_in_flight = False

    def record_failure(self) -> None:
        with self._lock:
            self._trial_in_flight = False
            self._failures += 1
            if self._state == HALF_OPEN or self._failures >= self.failure_threshold:
                self._state = OPEN
                self._opened_at = self._clock()

    def release(self) -> None:
        """The call says nothing about the endpoint's health: let the next call be the trial, change nothing else."""
        with self._lock:
            self._trial_in_flight = False

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"name": self.name, "state": self._state, "consecutive_failures": self._failures}


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, attempt: int, rng: Callable[[], float], retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        delay = rng() * ceiling
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_delay))
        return delay


def call_with_retries(provider: Provider, request: CompletionRequest, *, breaker: CircuitBreaker,
                      policy: RetryPolicy, deadline: float, clock: Clock = time.monotonic,
                      sleep: Callable[[float], None] = time.sleep,
                      rng: Callable[[], float] | None = None, breaker_timeout_floor: float = 0.0) -> Completion:
    import random

    jitter = rng or random.random
    attempt = 0
    while True:
        attempt += 1
        remaining = deadline - clock()
        if remaining <= 0:
            raise _time_limit(attempt - 1)
        breaker.before_call()
        attempt_timeout = min(request.timeout, remaining)
        try:
            completion = provider.complete(replace(request, timeout=attempt_timeout))
        except ProviderError as exc:
            # An endpoint that answers "bad request" is alive: only outages move the breaker.
            if not exc.retryable:
                breaker.record_success()
            elif isinstance(exc, ProviderTimeoutError) and attempt_timeout < breaker_timeout_floor:
                breaker.release()
            else:
                breaker.record_failure()
            exc.details.setdefault("attempts", attempt)
            if not exc.retryable or attempt >= policy.max_attempts:
                raise
            if clock() >= deadline:
                # The attempt's timeout was cut to the task's wall-time budget: that budget is the cause.
                raise _time_limit(attempt) from exc
            delay = policy.delay(attempt, jitter, exc.retry_after)
            if clock() + delay >= deadline:
                raise  # no time left for another attempt
            sleep(delay)
            continue
        except BaseException:
            breaker.record_failure()  # a bug in a provider must not leave a half-open trial stuck forever
            raise
        breaker.record_success()
        return replace(completion, attempts=attempt)


def _time_limit(attempts: int) -> TimeLimitExceededError:
    return TimeLimitExceededError(
        "the task ran out of its wall-time budget (config.max_wall_seconds) waiting for the language model",
        {"attempts": attempts},
    )
