"""Which provider an agent gets, where its key comes from, and what it is told when there is none."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest

from chalicelib.errors import AgentError
from chalicelib.providers.config import ProviderConfig
from chalicelib.providers.registry import Providers
from tests.llm_server import FakeClock, LLMServer, llm_settings

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:ymera/llm/openai-AbCdEf"


@pytest.fixture
def server() -> Iterator[LLMServer]:
    with LLMServer() as s:
        yield s


def error_of(call: Any) -> AgentError:
    with pytest.raises(AgentError) as caught:
        call()
    return caught.value


def test_no_provider_anywhere_names_every_setting_to_configure() -> None:
    exc = error_of(lambda: Providers(llm_settings(), environ={}).session(ProviderConfig()))
    assert exc.code == "PROVIDER_NOT_CONFIGURED"
    for name in ("config.provider", "config.model", "config.base_url", "config.api_key_env", "YMERA_LLM_PROVIDER",
                 "YMERA_LLM_MODEL", "YMERA_LLM_BASE_URL", "YMERA_LLM_API_KEY", "YMERA_LLM_API_KEY_SECRET_ARN"):
        assert name in exc.message
    assert exc.details["environment"][0] == "YMERA_LLM_PROVIDER"


def test_a_provider_without_a_model_says_so() -> None:
    exc = error_of(lambda: Providers(llm_settings(), environ={}).session(ProviderConfig(provider="bedrock")))
    assert exc.code == "PROVIDER_NOT_CONFIGURED" and "config.model or YMERA_LLM_MODEL" in exc.message


def test_a_named_key_variable_that_is_unset_is_named(server: LLMServer) -> None:
    cfg = ProviderConfig(provider="openai", model="m", base_url=server.url, api_key_env="YMERA_LLM_KEY_TEAM_A")
    exc = error_of(lambda: Providers(llm_settings(), environ={}).session(cfg))
    assert exc.code == "PROVIDER_NOT_CONFIGURED" and "YMERA_LLM_KEY_TEAM_A" in exc.message


def test_openai_itself_needs_a_key() -> None:
    exc = error_of(lambda: Providers(llm_settings(), environ={}).session(ProviderConfig(provider="openai", model="m")))
    assert exc.code == "PROVIDER_NOT_CONFIGURED" and "https://api.openai.com/v1 needs an API key" in exc.message


def test_the_stage_provider_serves_agents_that_name_none(server: LLMServer) -> None:
    settings = llm_settings(llm_provider="openai", llm_model="stage-model", llm_base_url=server.url,
                            llm_api_key="sk-stage")
    Providers(settings, environ={}).session(ProviderConfig()).complete("hi")
    sent = server.requests[0]
    assert sent["body"]["model"] == "stage-model" and sent["headers"]["Authorization"] == "Bearer sk-stage"


def test_the_stage_key_is_never_sent_to_an_endpoint_an_agent_chose(server: LLMServer) -> None:
    with LLMServer() as stage:
        settings = llm_settings(llm_provider="openai", llm_model="stage-model", llm_base_url=stage.url,
                                llm_api_key="sk-stage")
        Providers(settings, environ={}).session(ProviderConfig(base_url=server.url)).complete("hi")
    assert stage.calls == 0
    assert server.requests[0]["body"]["model"] == "stage-model"
    assert "Authorization" not in server.requests[0]["headers"]


def test_an_agent_key_from_secrets_manager_is_fetched_once_per_container(server: LLMServer) -> None:
    import boto3
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("secretsmanager", region_name="us-east-1")
        arn = client.create_secret(Name="ymera/llm/team-a", SecretString=json.dumps({"api_key": "sk-from-sm"}))["ARN"]
        fetches: list[str] = []

        class Counting:
            def get_secret_value(self, SecretId: str) -> Any:  # noqa: N803 (boto3's name)
                fetches.append(SecretId)
                return client.get_secret_value(SecretId=SecretId)

        clock = FakeClock()
        p = Providers(llm_settings(), environ={}, clock=clock, secrets_client_factory=Counting)
        cfg = ProviderConfig(provider="openai", model="m", base_url=server.url, api_key_secret_arn=arn)
        p.session(cfg).complete("one")
        p.session(cfg).complete("two")
        assert fetches == [arn]
        clock.advance(301)  # the cache lasts 5 minutes: a rotated key is picked up
        p.session(cfg).complete("three")
        assert fetches == [arn, arn]
        assert {r["headers"]["Authorization"] for r in server.requests} == {"Bearer sk-from-sm"}

        missing = ProviderConfig(provider="openai", model="m", base_url=server.url,
                                 api_key_secret_arn=arn.replace("team-a", "team-b"))
        exc = error_of(lambda: p.session(missing))
        assert exc.code == "PROVIDER_NOT_CONFIGURED" and exc.details["aws_error"] == "ResourceNotFoundException"


@pytest.mark.parametrize(("config", "where"), [
    ({"api_key": "sk-live-123"}, "api_key"),  # a key in clear is not a config key at all
    ({"api_key_env": "YMERA_JWT_SECRET"}, "api_key_env"),  # only YMERA_LLM_KEY_* may be named
    ({"api_key_env": "AWS_SECRET_ACCESS_KEY"}, "api_key_env"),
    ({"api_key_secret_arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/jwt-AbC"},
     "api_key_secret_arn"),
    ({"base_url": "file:///etc/passwd"}, "base_url"),
    ({"provider": "bedrock", "base_url": "http://x"}, None),
    ({"api_key_env": "YMERA_LLM_KEY_A", "api_key_secret_arn": ARN}, None),
    ({"temperature": 3}, "temperature"),
    ({"max_wall_seconds": 0}, "max_wall_seconds"),
])
def test_config_refuses_keys_in_clear_and_dangerous_references(config: dict[str, Any], where: str | None) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        ProviderConfig.model_validate(config)
    if where:
        assert caught.value.errors()[0]["loc"] == (where,)


def test_config_accepts_references_and_defaults() -> None:
    cfg = ProviderConfig.model_validate({"provider": "openai", "model": "llama3.2", "api_key_secret_arn": ARN,
                                         "base_url": "http://ollama:11434/v1"})
    assert (cfg.max_tokens, cfg.timeout_seconds, cfg.max_total_tokens, cfg.max_wall_seconds) == (1024, 30, 20000, 50)


def test_endpoint_settings_in_an_agent_config_do_not_silently_apply_to_a_bedrock_stage(server: LLMServer) -> None:
    settings = llm_settings(llm_provider="bedrock", llm_model="anthropic.claude-3-haiku-20240307-v1:0")
    exc = error_of(lambda: Providers(settings, environ={}).session(ProviderConfig(base_url=server.url)))
    assert exc.code == "PROVIDER_NOT_CONFIGURED" and "config.provider 'openai'" in exc.message
