"""Circuit breaker, backoff and per-task limits, against a real HTTP server and an injected clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.errors import AgentError
from chalicelib.providers.config import ProviderConfig
from chalicelib.providers.errors import CircuitOpenError
from chalicelib.providers.registry import Providers
from chalicelib.providers.resilience import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, RetryPolicy
from tests.llm_server import FakeClock, LLMServer, Reply, completion, error, llm_settings


@pytest.fixture
def server() -> Iterator[LLMServer]:
    with LLMServer() as s:
        yield s


def providers(clock: FakeClock, **settings: Any) -> Providers:
    return Providers(llm_settings(**settings), environ={}, clock=clock, sleep=clock.sleep, rng=lambda: 1.0)


def config(server: LLMServer, **extra: Any) -> ProviderConfig:
    return ProviderConfig(provider="openai", model="m", base_url=server.url, **extra)


def code_of(call: Any) -> str:
    with pytest.raises(AgentError) as caught:
        call()
    return caught.value.code


def test_circuit_opens_after_n_failures_fails_fast_then_half_opens_and_closes(server: LLMServer) -> None:
    clock = FakeClock()
    p = providers(clock, llm_max_attempts=1, llm_breaker_failure_threshold=3, llm_breaker_reset_seconds=30)
    server.script(error(500), error(502), error(503))
    for _ in range(3):  # three tasks, each failing once
        assert code_of(lambda: p.session(config(server)).complete("hi")) == "PROVIDER_UNAVAILABLE"
    breaker = p.breaker(f"openai at {server.url} for anonymous")
    assert breaker.state == OPEN and server.calls == 3

    # Open: fails at once, without touching the endpoint.
    with pytest.raises(CircuitOpenError) as caught:
        p.session(config(server)).complete("hi")
    assert caught.value.code == "PROVIDER_UNAVAILABLE" and caught.value.details["circuit"] == "open"
    assert caught.value.details["retry_in_seconds"] == 30.0
    assert server.calls == 3

    clock.advance(29.9)
    assert code_of(lambda: p.session(config(server)).complete("hi")) == "PROVIDER_UNAVAILABLE"
    assert server.calls == 3

    clock.advance(0.1)  # cool-down over: one trial call goes through and succeeds
    server.script(completion("recovered"))
    assert p.session(config(server)).complete("hi").text == "recovered"
    assert breaker.state == CLOSED and server.calls == 4
    assert p.session(config(server)).complete("hi").text == "ok"  # and traffic flows again


def test_a_failed_half_open_trial_reopens_for_another_cool_down(server: LLMServer) -> None:
    clock = FakeClock()
    p = providers(clock, llm_max_attempts=1, llm_breaker_failure_threshold=2, llm_breaker_reset_seconds=10)
    server.script(error(500), error(500), error(500))
    for _ in range(2):
        code_of(lambda: p.session(config(server)).complete("hi"))
    clock.advance(10)
    assert code_of(lambda: p.session(config(server)).complete("hi")) == "PROVIDER_UNAVAILABLE"  # the trial
    assert server.calls == 3
    assert code_of(lambda: p.session(config(server)).complete("hi")) == "PROVIDER_UNAVAILABLE"
    assert server.calls == 3  # open again: no call
    clock.advance(10)
    assert p.session(config(server)).complete("hi").text == "ok"


def test_retries_inside_one_task_stop_when_the_circuit_opens(server: LLMServer) -> None:
    clock = FakeClock()
    p = providers(clock, llm_max_attempts=5, llm_breaker_failure_threshold=2)
    server.script(*(error(503) for _ in range(5)))
    with pytest.raises(CircuitOpenError):
        p.session(config(server)).complete("hi")
    assert server.calls == 2


def test_client_errors_do_not_open_the_circuit(server: LLMServer) -> None:
    clock = FakeClock()
    p = providers(clock, llm_breaker_failure_threshold=2)
    server.script(*(error(400) for _ in range(4)))
    for _ in range(4):
        assert code_of(lambda: p.session(config(server)).complete("hi")) == "PROVIDER_REJECTED"
    assert p.breaker(f"openai at {server.url} for anonymous").state == CLOSED and server.calls == 4


def test_breakers_are_per_endpoint(server: LLMServer) -> None:
    clock = FakeClock()
    p = providers(clock, llm_max_attempts=1, llm_breaker_failure_threshold=1)
    server.script(error(500))
    code_of(lambda: p.session(config(server)).complete("hi"))
    with LLMServer() as other:
        assert p.session(config(other)).complete("hi").text == "ok"
    assert {b["state"] for b in p.breakers()} == {OPEN, CLOSED}


def test_half_open_lets_exactly_one_of_many_concurrent_callers_through() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("x", failure_threshold=1, reset_timeout=5, clock=clock)
    breaker.record_failure()
    clock.advance(5)
    passed: list[int] = []
    barrier = threading.Barrier(20)

    def call(i: int) -> None:
        barrier.wait()
        try:
            breaker.before_call()
        except CircuitOpenError:
            return
        passed.append(i)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(passed) == 1 and breaker.state == HALF_OPEN


def test_full_jitter_delay_bounds() -> None:
    policy = RetryPolicy(max_attempts=6, base_delay=0.5, max_delay=4.0)
    assert [policy.delay(n, lambda: 1.0) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert [policy.delay(n, lambda: 0.0) for n in range(1, 6)] == [0.0] * 5
    assert policy.delay(1, lambda: 0.5, retry_after=3) == 3  # the server's wish wins when longer...
    assert policy.delay(1, lambda: 0.5, retry_after=60) == 4.0  # ...up to the cap


def test_token_limit_exceeded_fails_and_reports_the_usage(server: LLMServer) -> None:
    server.script(completion("a long answer", prompt_tokens=40, completion_tokens=30))
    s = providers(FakeClock()).session(config(server, max_total_tokens=60, max_tokens=500))
    with pytest.raises(AgentError) as caught:
        s.complete("hi")
    exc = caught.value
    assert exc.code == "TOKEN_LIMIT_EXCEEDED"
    assert exc.details["limit"] == 60 and exc.details["usage"]["total_tokens"] == 70
    # The request's output budget had been clipped to what was left (60 minus the ~1-token prompt).
    assert server.requests[0]["body"]["max_tokens"] == 59


def test_a_prompt_larger_than_the_token_budget_is_refused_before_it_is_sent(server: LLMServer) -> None:
    s = providers(FakeClock()).session(config(server, max_total_tokens=100))
    with pytest.raises(AgentError) as caught:
        s.complete("x" * 2000)  # ~500 tokens
    assert caught.value.code == "TOKEN_LIMIT_EXCEEDED" and caught.value.details["estimated_prompt_tokens"] == 500
    assert server.calls == 0


def test_wall_time_limit_cuts_a_slow_call_short(server: LLMServer) -> None:
    server.script(Reply(delay=3, body=completion("late").body))
    s = Providers(llm_settings(), environ={}).session(config(server, max_wall_seconds=0.3, timeout_seconds=10))
    started = time.monotonic()
    with pytest.raises(AgentError) as caught:
        s.complete("hi")
    assert caught.value.code == "TIME_LIMIT_EXCEEDED"
    assert caught.value.details["limit_seconds"] == 0.3
    assert time.monotonic() - started < 1.5
    assert server.calls == 1  # no retry past the deadline
