"""Whose failures open which circuit: one tenant must not switch an endpoint off for everyone.

Before: one breaker per base_url, shared by every tenant, opened by any timeout — a user who set
timeout_seconds=0.2 on the operator's endpoint (or pointed their own agents at a dead copy of a shared
URL) made every other tenant's calls fail fast with PROVIDER_UNAVAILABLE.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.errors import AgentError
from chalicelib.providers.config import ProviderConfig
from chalicelib.providers.registry import Providers
from chalicelib.providers.resilience import CLOSED, OPEN
from tests.llm_server import LLMServer, Reply, catalog, error, llm_settings

ALICE, BOB = uuid.uuid4(), uuid.uuid4()


@pytest.fixture
def server() -> Iterator[LLMServer]:
    with LLMServer() as s:
        yield s


def code_of(call: Any) -> str:
    with pytest.raises(AgentError) as caught:
        call()
    return caught.value.code


def test_a_users_failing_own_endpoint_opens_only_their_breaker(server: LLMServer) -> None:
    p = Providers(llm_settings(llm_max_attempts=1, llm_breaker_failure_threshold=2), environ={})
    own = ProviderConfig(base_url=server.url, model="m")
    server.script(error(503), error(503))
    for _ in range(2):
        assert code_of(lambda: p.session(own, user_id=ALICE).complete("hi")) == "PROVIDER_UNAVAILABLE"
    assert p.breaker(f"openai at {server.url} for {ALICE}").state == OPEN
    assert p.session(own, user_id=BOB).complete("hi").text == "ok"  # Bob's breaker for the same URL is closed
    assert server.calls == 3


def test_a_users_short_timeout_cannot_open_the_shared_endpoints_breaker(server: LLMServer) -> None:
    p = Providers(llm_settings(llm_endpoints=catalog(server, timeout_seconds=1.0), llm_min_timeout_seconds=0.2,
                               llm_max_attempts=1, llm_breaker_failure_threshold=2),
                  environ={"YMERA_LLM_KEY_TEST": "k"})
    impatient = ProviderConfig(endpoint="test", model="test-model", timeout_seconds=0.01)  # raised to 0.2
    server.script(*(Reply(delay=0.5, body={}) for _ in range(3)))
    for _ in range(3):
        assert code_of(lambda: p.session(impatient, user_id=ALICE).complete("hi")) == "PROVIDER_TIMEOUT"
    assert p.breaker("endpoint test").state == CLOSED
    patient = ProviderConfig(endpoint="test", model="test-model")
    assert p.session(patient, user_id=BOB).complete("hi").text == "ok"


def test_timeouts_at_the_operators_timeout_do_count(server: LLMServer) -> None:
    p = Providers(llm_settings(llm_endpoints=catalog(server, timeout_seconds=0.2), llm_min_timeout_seconds=0.2,
                               llm_max_attempts=1, llm_breaker_failure_threshold=2),
                  environ={"YMERA_LLM_KEY_TEST": "k"})
    cfg = ProviderConfig(endpoint="test", model="test-model", timeout_seconds=0.2)
    server.script(*(Reply(delay=0.5, body={}) for _ in range(2)))
    for _ in range(2):
        assert code_of(lambda: p.session(cfg, user_id=ALICE).complete("hi")) == "PROVIDER_TIMEOUT"
    assert p.breaker("endpoint test").state == OPEN
