"""The `llm` agent: a prompt through the configured provider, the completion and what it cost."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chalicelib.agents.llm import LLMAgent, LLMInput
from chalicelib.agents.registry import get_agent, validate_config, validate_input
from chalicelib.errors import AgentError, ValidationError
from chalicelib.providers.registry import Providers
from tests.llm_server import LLMServer, agent_context, completion, llm_settings, openai_config

ENV = {"YMERA_LLM_KEY_TEST": "sk-test"}


@pytest.fixture
def server() -> Iterator[LLMServer]:
    with LLMServer() as s:
        yield s


def run(server: LLMServer, input_data: dict, **config: object) -> tuple[dict, dict]:
    providers = Providers(llm_settings(), environ=ENV)
    result = LLMAgent().run(LLMInput.model_validate(input_data), openai_config(server, **config),
                            agent_context(providers, "llm"))
    return result.output, result.metrics


def test_prompt_with_history_returns_the_completion_usage_and_latency(server: LLMServer) -> None:
    server.script(completion("Five, then the DLQ.", prompt_tokens=61, completion_tokens=7))
    output, metrics = run(server, LLMAgent.example_input)

    assert output["text"] == "Five, then the DLQ." and output["model"] == "test-model"
    assert output["provider"] == "openai" and output["finish_reason"] == "stop"
    assert output["usage"] == {"input_tokens": 61, "output_tokens": 7, "total_tokens": 68}
    assert output["latency_ms"] > 0 and output["attempts"] == 1
    assert metrics["total_tokens"] == 68 and metrics["provider_calls"] == 1
    assert [m["role"] for m in server.requests[0]["body"]["messages"]] == ["system", "user", "assistant", "user"]
    assert server.requests[0]["body"]["messages"][-1]["content"] == "How many receives before a message moves there?"


def test_the_agents_system_prompt_applies_unless_the_task_gives_one(server: LLMServer) -> None:
    run(server, {"prompt": "hi"}, system_prompt="You are terse.")
    run(server, {"prompt": "hi", "system": "You are verbose."}, system_prompt="You are terse.")
    run(server, {"prompt": "hi"})
    firsts = [r["body"]["messages"][0] for r in server.requests]
    assert firsts == [{"role": "system", "content": "You are terse."},
                      {"role": "system", "content": "You are verbose."},
                      {"role": "user", "content": "hi"}]


def test_without_a_provider_the_task_fails_naming_what_to_set() -> None:
    providers = Providers(llm_settings(), environ={})
    for ctx in (None, agent_context(providers, "llm")):
        with pytest.raises(AgentError) as caught:
            LLMAgent().run(LLMInput(prompt="hi"), {}, ctx)
        assert caught.value.code == "PROVIDER_NOT_CONFIGURED" and "YMERA_LLM_PROVIDER" in caught.value.message


@pytest.mark.parametrize("bad", [{}, {"prompt": ""}, {"prompt": "hi", "messages": [{"role": "system", "content": "x"}]},
                                 {"prompt": "hi", "temperature": 1}])
def test_invalid_input_is_refused(bad: dict) -> None:
    with pytest.raises(ValidationError):
        validate_input("llm", bad)


def test_config_is_the_provider_config_plus_a_system_prompt() -> None:
    assert get_agent("llm").provider_backed is True
    validate_config("llm", {"provider": "openai", "model": "m", "system_prompt": "Be kind."})
    with pytest.raises(ValidationError) as caught:
        validate_config("llm", {"provider": "openai", "api_key": "sk-live"})
    assert caught.value.details["errors"][0]["loc"] == ["config", "api_key"]
