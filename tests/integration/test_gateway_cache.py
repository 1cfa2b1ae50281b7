"""The gateway's prompt cache against real Redis: what the key covers, when an answer is not cached, and that a
Redis outage only costs the cache."""

from __future__ import annotations

import socket
import uuid
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from chalicelib.engines.intelligence import Gateway, cache_key
from chalicelib.providers.base import Completion, CompletionRequest, Message, Usage
from chalicelib.providers.resilience import CircuitBreaker
from chalicelib.providers.session import Endpoint
from tests.conftest import REDIS_PREFIX
from tests.llm_server import llm_settings


class Calls:
    def __init__(self, finish_reason: str = "stop") -> None:
        self.requests: list[CompletionRequest] = []
        self.finish_reason = finish_reason

    def __call__(self, request: CompletionRequest) -> Completion:
        self.requests.append(request)
        return Completion(text=f"answer {len(self.requests)}", model=request.model, usage=Usage(10, 5, 15),
                          latency_ms=12.0, provider="openai", finish_reason=self.finish_reason)


def endpoint(alias: str | None = "default", model: str = "m") -> Endpoint:
    return Endpoint(provider=None, model=model, breaker=CircuitBreaker("t"), alias=alias,  # type: ignore[arg-type]
                    identity=alias or "own:http://x")


def request(text: str = "hi", **kw: Any) -> CompletionRequest:
    return CompletionRequest(messages=(Message("user", text),), model=kw.pop("model", "m"), **kw)


@pytest.fixture
def gateway(redis_url: str) -> Gateway:
    client = redis.Redis.from_url(redis_url)
    prefix = f"{REDIS_PREFIX}{uuid.uuid4().hex[:6]}:"
    return Gateway(llm_settings(redis_key_prefix=prefix), redis=lambda: client)


def ask(gateway: Gateway, calls: Calls, user: uuid.UUID, req: CompletionRequest | None = None,
        ep: Endpoint | None = None, requested: int | None = None, ttl: int | None = 60) -> Completion:
    req = req or request()
    return gateway.complete(ep or endpoint(), req, user_id=user, task_id=None,
                            requested_max_tokens=requested or req.max_tokens, prompt_tokens=1,
                            cache_ttl_seconds=ttl, call=calls)


def test_the_key_covers_user_endpoint_model_messages_and_parameters() -> None:
    u, v = uuid.uuid4(), uuid.uuid4()
    base = cache_key("p:", u, endpoint(), request(), 100)
    assert base == cache_key("p:", u, endpoint(), request(), 100)
    assert str(u) in base
    others = [cache_key("p:", v, endpoint(), request(), 100), cache_key("p:", u, endpoint("other"), request(), 100),
              cache_key("p:", u, endpoint(None), request(), 100), cache_key("p:", u, endpoint(), request("ho"), 100),
              cache_key("p:", u, endpoint(), request(model="n"), 100),
              cache_key("p:", u, endpoint(), request(temperature=0.9), 100),
              cache_key("p:", u, endpoint(), request(system="be brief"), 100),
              cache_key("p:", u, endpoint(), request(), 101)]
    assert base not in others and len(set(others)) == len(others)


def test_a_hit_is_served_once_cached_and_only_to_its_user(gateway: Gateway) -> None:
    calls, a, b = Calls(), uuid.uuid4(), uuid.uuid4()
    first = ask(gateway, calls, a)
    again = ask(gateway, calls, a)
    assert len(calls.requests) == 1 and again.cached and not first.cached
    assert again.text == first.text and again.usage == first.usage and again.attempts == 0
    assert ask(gateway, calls, b).text == "answer 2"  # B's own call
    assert not ask(gateway, Calls(), a, ttl=None).cached  # an agent that did not opt in never reads the cache


def test_an_answer_cut_short_by_a_clipped_budget_is_not_cached(gateway: Gateway) -> None:
    calls, a = Calls(finish_reason="length"), uuid.uuid4()
    ask(gateway, calls, a, request(max_tokens=50), requested=1024)
    ask(gateway, calls, a, request(max_tokens=50), requested=1024)
    assert len(calls.requests) == 2
    # cut short at the requested size is the answer to those parameters
    ask(gateway, calls, a, request(max_tokens=1024), requested=1024)
    assert ask(gateway, calls, a, request(max_tokens=1024), requested=1024).cached


def test_a_redis_outage_costs_only_the_cache() -> None:
    with socket.socket() as s:  # a port nobody listens on: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = Counting(host="127.0.0.1", port=port, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    gateway = Gateway(llm_settings(redis_breaker_seconds=60), redis=lambda: down)
    calls, a = Calls(), uuid.uuid4()
    assert ask(gateway, calls, a).text == "answer 1"
    assert ask(gateway, calls, a).text == "answer 2"
    assert len(calls.requests) == 2
    assert down.commands == 1  # the first failure opens the breaker: no further Redis round trip per call


class Counting(redis.Redis):
    commands = 0

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands += 1
        return super().execute_command(*args, **options)


def test_the_operator_can_turn_caching_off(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    gateway = Gateway(llm_settings(llm_cache_max_ttl_seconds=0, redis_key_prefix=f"{REDIS_PREFIX}off:"),
                      redis=lambda: client)
    calls, a = Calls(), uuid.uuid4()
    ask(gateway, calls, a)
    ask(gateway, calls, a)
    assert len(calls.requests) == 2
