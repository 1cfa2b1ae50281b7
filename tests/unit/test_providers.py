"""The OpenAI-compatible provider against a real HTTP server: what is sent, what comes back, what fails how."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.providers.config import ProviderConfig
from chalicelib.providers.errors import ProviderError
from chalicelib.providers.registry import Providers
from chalicelib.providers.session import LLMSession
from tests.llm_server import FakeClock, LLMServer, Reply, catalog, completion, error, llm_settings, recorded

KEY_ENV = {"YMERA_LLM_KEY_TEST": "sk-test-123"}


@pytest.fixture
def server() -> Iterator[LLMServer]:
    with LLMServer() as s:
        yield s


def session(server: LLMServer, clock: Any = None, settings: Any = None, **config: Any) -> LLMSession:
    cfg = ProviderConfig(endpoint="test", model="gpt-4o-mini", **config)
    kwargs: dict[str, Any] = {"clock": clock, "sleep": clock.sleep, "rng": lambda: 1.0} if clock else {}
    return Providers(settings or llm_settings(llm_endpoints=catalog(server)), environ=KEY_ENV, **kwargs).session(cfg)


def fail(call: Any) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        call()
    return caught.value


def test_success_sends_the_chat_request_and_returns_text_usage_and_latency(server: LLMServer) -> None:
    server.script(Reply(body=recorded("openai_chat_completion")))
    s = session(server, max_tokens=300, temperature=0.5)
    result = s.complete("How many receives?", system="Be brief.")

    assert result.text == "A message moves to the dead-letter queue after maxReceiveCount receives; we use 5."
    assert (result.model, result.provider, result.finish_reason) == ("gpt-4o-mini-2024-07-18", "openai", "stop")
    assert result.usage.as_dict() == {"input_tokens": 57, "output_tokens": 21, "total_tokens": 78}
    assert result.latency_ms > 0 and result.attempts == 1
    sent = server.requests[0]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["Authorization"] == "Bearer sk-test-123"
    assert sent["body"] == {"model": "gpt-4o-mini", "max_tokens": 300, "temperature": 0.5, "stream": False,
                            "messages": [{"role": "system", "content": "Be brief."},
                                         {"role": "user", "content": "How many receives?"}]}
    assert s.metrics() == {"provider": "openai", "model": "gpt-4o-mini", "provider_calls": 1, "provider_attempts": 1,
                           "provider_latency_ms": result.latency_ms, "input_tokens": 57, "output_tokens": 21,
                           "total_tokens": 78}


def test_ollama_answer_is_read_and_a_server_without_usage_gets_an_estimate(server: LLMServer) -> None:
    server.script(Reply(body=recorded("ollama_chat_completion")), Reply(body=recorded(
        "llamacpp_chat_completion_no_usage")))
    s = session(server)
    first = s.complete("How many receives?")
    assert (first.text, first.model) == ("Five receives, then the dead-letter queue.", "llama3.2:3b")
    assert first.usage.total_tokens == 75 and not first.usage.estimated
    second = s.complete("12345678")  # 8 characters: 2 tokens at ~4 characters a token
    assert second.text == "Five." and second.usage.as_dict() == {
        "input_tokens": 2, "output_tokens": 2, "total_tokens": 4, "estimated": True}
    assert s.usage.total_tokens == 79 and s.calls == 2


def test_timeout_is_retried_then_reported(server: LLMServer) -> None:
    server.script(*(Reply(delay=3, body=completion("late").body) for _ in range(3)))
    s = session(server, timeout_seconds=0.2)
    started = time.monotonic()
    exc = fail(lambda: s.complete("hi"))
    assert exc.code == "PROVIDER_TIMEOUT" and exc.details["attempts"] == 3
    assert server.calls == 3
    assert time.monotonic() - started < 2.5  # three 0.2 s timeouts plus short backoffs, never the 3 s replies


def test_retry_then_success_after_two_server_errors(server: LLMServer) -> None:
    clock = FakeClock()
    server.script(error(500), error(503), completion("third time lucky"))
    result = session(server, clock).complete("hi")
    assert result.text == "third time lucky" and result.attempts == 3
    assert server.calls == 3
    # Full jitter with the random draw pinned to its maximum: base * 2**(n-1).
    assert clock.sleeps == [0.5, 1.0]


def test_rate_limit_is_retried_after_the_servers_retry_after(server: LLMServer) -> None:
    clock = FakeClock()
    server.script(error(429, "slow down", {"Retry-After": "3"}), completion("ok"))
    result = session(server, clock).complete("hi")
    assert result.attempts == 2 and clock.sleeps == [3.0]


@pytest.mark.parametrize(("status", "code"), [(400, "PROVIDER_REJECTED"), (404, "PROVIDER_REJECTED"),
                                              (401, "PROVIDER_AUTH_FAILED"), (403, "PROVIDER_AUTH_FAILED")])
def test_client_errors_are_not_retried(server: LLMServer, status: int, code: str) -> None:
    server.script(error(status, "model 'gpt-9' does not exist"))
    exc = fail(lambda: session(server, FakeClock()).complete("hi"))
    assert exc.code == code and server.calls == 1
    # the endpoint's own words are logged, never copied into the task (it could be any host's body)
    assert exc.details["status"] == status and "provider_message" not in exc.details
    assert "gpt-9" not in str(exc.details) + exc.message
    assert "sk-test-123" not in str(exc.details) + exc.message


def test_a_dropped_connection_is_retried(server: LLMServer) -> None:
    server.script(Reply(drop=True), completion("back"))
    assert session(server, FakeClock()).complete("hi").text == "back"
    assert server.calls == 2


def test_connection_refused_is_provider_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once the socket closes
    cfg = ProviderConfig(provider="openai", model="m", base_url=f"http://127.0.0.1:{port}/v1")
    clock = FakeClock()
    s = Providers(llm_settings(), environ={}, clock=clock, sleep=clock.sleep, rng=lambda: 0.0).session(cfg)
    exc = fail(lambda: s.complete("hi"))
    assert exc.code == "PROVIDER_UNAVAILABLE" and exc.details["attempts"] == 3


def test_a_2xx_that_is_not_a_completion_is_a_bad_response_not_retried(server: LLMServer) -> None:
    server.script(Reply(body="<html>proxy login</html>"))
    exc = fail(lambda: session(server, FakeClock()).complete("hi"))
    assert exc.code == "PROVIDER_BAD_RESPONSE" and server.calls == 1


def test_redirects_are_not_followed_so_the_key_goes_nowhere_else(server: LLMServer) -> None:
    server.script(Reply(status=307, headers={"Location": server.url + "/elsewhere"}, body={}))
    exc = fail(lambda: session(server, FakeClock()).complete("hi"))
    assert exc.code == "PROVIDER_REJECTED" and server.calls == 1
