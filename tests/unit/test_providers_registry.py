"""Which endpoint an agent gets, whose key goes where, and what it is told when there is none.

Issue 7 §1: an agent config could combine its own `base_url` with any YMERA_LLM_KEY_* variable or
any ymera/llm/* secret, and the platform sent that key to the agent's host. Now keys belong to the
operator's catalog entries and go only to their own base_url.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest

from chalicelib.agents.llm import LLMAgent, LLMInput
from chalicelib.config import ConfigError
from chalicelib.errors import AgentError
from chalicelib.providers.config import ProviderConfig
from chalicelib.providers.registry import Providers, wall_cap_seconds
from tests.llm_server import FakeClock, LLMServer, agent_context, catalog, llm_settings

KEY_ENV = {"YMERA_LLM_KEY_TEST": "sk-catalog", "YMERA_LLM_KEY_X": "sk-operator-secret"}


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
    for name in ("config.endpoint", "config.base_url", "config.model", "config.key", "YMERA_LLM_ENDPOINTS",
                 "YMERA_LLM_PROVIDER", "YMERA_LLM_MODEL", "YMERA_LLM_BASE_URL", "YMERA_LLM_API_KEY",
                 "YMERA_LLM_API_KEY_SECRET_ARN"):
        assert name in exc.message
    assert exc.details["environment"][0] == "YMERA_LLM_ENDPOINTS"


def test_a_stage_provider_without_a_model_says_so() -> None:
    exc = error_of(lambda: Providers(llm_settings(llm_provider="bedrock"), environ={}).session(ProviderConfig()))
    assert exc.code == "PROVIDER_NOT_CONFIGURED" and "set config.model" in exc.message


def test_openai_itself_needs_a_key_and_the_error_names_no_setting() -> None:
    exc = error_of(lambda: Providers(llm_settings(llm_provider="openai", llm_model="m"), environ={})
                   .session(ProviderConfig()))
    assert exc.code == "PROVIDER_NOT_CONFIGURED" and "not available" in exc.message


def test_the_stage_provider_is_the_default_endpoint(server: LLMServer) -> None:
    settings = llm_settings(llm_provider="openai", llm_model="stage-model", llm_base_url=server.url,
                            llm_api_key="sk-stage")
    Providers(settings, environ={}).session(ProviderConfig()).complete("hi")
    Providers(settings, environ={}).session(ProviderConfig(endpoint="default")).complete("hi")
    assert [r["body"]["model"] for r in server.requests] == ["stage-model", "stage-model"]
    assert {r["headers"]["Authorization"] for r in server.requests} == {"Bearer sk-stage"}


def test_the_stage_key_is_never_sent_to_an_endpoint_an_agent_chose(server: LLMServer) -> None:
    with LLMServer() as stage:
        settings = llm_settings(llm_provider="openai", llm_model="stage-model", llm_base_url=stage.url,
                                llm_api_key="sk-stage")
        Providers(settings, environ={}).session(ProviderConfig(base_url=server.url, model="mine")).complete("hi")
    assert stage.calls == 0
    assert server.requests[0]["body"]["model"] == "mine"
    assert "Authorization" not in server.requests[0]["headers"]


def test_an_attacker_config_naming_an_operator_key_variable_gets_no_key(server: LLMServer) -> None:
    """GIVEN an agent saved (before this change) with base_url=attacker and api_key_env=YMERA_LLM_KEY_X
    WHEN its task runs THEN it fails AGENT_CONFIG_INVALID telling it what to use, and the attacker's host
    receives nothing (before: the request arrived with `Authorization: Bearer sk-operator-secret`)."""
    attacker = {"provider": "openai", "model": "m", "base_url": server.url, "api_key_env": "YMERA_LLM_KEY_X"}
    providers = Providers(llm_settings(llm_endpoints=catalog(server, "x", api_key_env="YMERA_LLM_KEY_X")),
                          environ=KEY_ENV)
    exc = error_of(lambda: LLMAgent().run(LLMInput(prompt="hi"), attacker, agent_context(providers, "llm")))
    assert exc.code == "AGENT_CONFIG_INVALID"
    assert "config.endpoint" in json.dumps(exc.details) and "/provider-keys/" in json.dumps(exc.details)
    assert server.calls == 0


@pytest.mark.parametrize("removed", [{"api_key_env": "YMERA_LLM_KEY_X"},
                                     {"api_key_secret_arn": "arn:aws:secretsmanager:us-east-1:123456789012:"
                                                            "secret:ymera/llm/x-AbCdEf"}])
def test_removed_key_references_are_refused_with_what_to_use_instead(removed: dict[str, str]) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        ProviderConfig.model_validate({"base_url": "https://evil.example/v1", "model": "m", **removed})
    message = caught.value.errors()[0]["msg"]
    assert "no longer supported" in message and "config.endpoint" in message and "config.key" in message


def test_a_catalog_key_goes_only_to_its_own_base_url(server: LLMServer) -> None:
    with LLMServer() as other:
        p = Providers(llm_settings(llm_endpoints=catalog(server)), environ=KEY_ENV)
        p.session(ProviderConfig(endpoint="test", model="test-model")).complete("hi")
        p.session(ProviderConfig(base_url=other.url, model="test-model")).complete("hi")
        assert "Authorization" not in other.requests[0]["headers"]
    assert server.requests[0]["headers"]["Authorization"] == "Bearer sk-catalog"
    with pytest.raises(pydantic.ValidationError):
        ProviderConfig(endpoint="test", base_url=other.url)  # an alias and a URL at once: refused


def test_only_the_catalogs_models_are_offered(server: LLMServer) -> None:
    p = Providers(llm_settings(llm_endpoints=catalog(server, models=["cheap"])), environ=KEY_ENV)
    exc = error_of(lambda: p.session(ProviderConfig(endpoint="test", model="expensive")))
    assert exc.code == "PROVIDER_NOT_CONFIGURED" and exc.details["models"] == ["cheap"]
    p.session(ProviderConfig(endpoint="test")).complete("hi")  # the first allowed model is the default
    assert server.requests[0]["body"]["model"] == "cheap"
    exc = error_of(lambda: p.session(ProviderConfig(endpoint="nope")))
    assert exc.code == "PROVIDER_NOT_CONFIGURED" and exc.details["endpoints"] == ["test"]


def test_the_catalog_token_ceiling_is_hard_and_a_config_can_only_lower_it(server: LLMServer) -> None:
    p = Providers(llm_settings(llm_endpoints=catalog(server, max_tokens_per_task=500)), environ=KEY_ENV)
    assert p.resolve(ProviderConfig(endpoint="test", max_total_tokens=1_000_000)).max_total_tokens == 500
    assert p.resolve(ProviderConfig(endpoint="test", max_total_tokens=None)).max_total_tokens == 500
    assert p.resolve(ProviderConfig(endpoint="test", max_total_tokens=100)).max_total_tokens == 100
    exc = error_of(lambda: p.session(ProviderConfig(endpoint="test", max_total_tokens=10**6)).complete("x" * 4000))
    assert exc.code == "TOKEN_LIMIT_EXCEEDED" and exc.details["limit"] == 500 and server.calls == 0


def test_a_users_short_timeout_is_raised_to_the_minimum_on_operator_endpoints(server: LLMServer) -> None:
    p = Providers(llm_settings(llm_endpoints=catalog(server), llm_min_timeout_seconds=5), environ=KEY_ENV)
    assert p.resolve(ProviderConfig(endpoint="test", timeout_seconds=0.1)).timeout == 5
    assert p.resolve(ProviderConfig(base_url=server.url, model="m", timeout_seconds=0.1)).timeout == 0.1


def test_max_wall_seconds_is_capped_below_the_function_timeout(server: LLMServer) -> None:
    """Before: a config's max_wall_seconds of 900 outlived a 60 s (or 300 s) function."""
    assert wall_cap_seconds(60) == 50 and wall_cap_seconds(300) == 270
    p = Providers(llm_settings(llm_endpoints=catalog(server), function_timeout_seconds=60), environ=KEY_ENV)
    session = p.session(ProviderConfig(endpoint="test", max_wall_seconds=900))
    assert session.max_wall_seconds == 50 and session.deadline - session.started == pytest.approx(50)
    assert p.session(ProviderConfig(endpoint="test", max_wall_seconds=20)).max_wall_seconds == 20


def _secrets_client(client: Any, denied: set[str], fetches: list[str]) -> Any:
    from botocore.exceptions import ClientError

    class Client:
        def get_secret_value(self, SecretId: str) -> Any:  # noqa: N803 (boto3's name)
            fetches.append(SecretId)
            if SecretId in denied:
                raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "GetSecretValue")
            return client.get_secret_value(SecretId=SecretId)

    return Client


def test_catalog_keys_from_secrets_manager_and_every_missing_key_looks_the_same(server: LLMServer) -> None:
    import boto3
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("secretsmanager", region_name="us-east-1")
        client.create_secret(Name="ymera/test/llm/team-a", SecretString=json.dumps({"api_key": "sk-from-sm"}))
        client.create_secret(Name="ymera/test/llm/denied", SecretString="sk-denied")
        endpoints = {alias: {"provider": "openai", "base_url": server.url, "api_key_secret": alias}
                     for alias in ("team-a", "gone", "denied")}
        endpoints["unset"] = {"provider": "openai", "base_url": server.url, "api_key_env": "YMERA_LLM_KEY_UNSET"}
        fetches: list[str] = []
        clock = FakeClock()
        p = Providers(llm_settings(stage="test", llm_endpoints=json.dumps(endpoints)), environ={}, clock=clock,
                      secrets_client_factory=_secrets_client(client, {"ymera/test/llm/denied"}, fetches))
        cfg = ProviderConfig(endpoint="team-a", model="m")
        p.session(cfg).complete("one")
        p.session(cfg).complete("two")
        assert fetches == ["ymera/test/llm/team-a"]
        clock.advance(301)  # the cache lasts 5 minutes: a rotated key is picked up
        p.session(cfg).complete("three")
        assert len(fetches) == 2
        assert {r["headers"]["Authorization"] for r in server.requests} == {"Bearer sk-from-sm"}

        seen = []
        for alias in ("gone", "denied", "unset"):
            exc = error_of(lambda alias=alias: p.session(ProviderConfig(endpoint=alias, model="m")))
            seen.append((exc.code, exc.message.replace(alias, "*"), json.dumps(exc.details).replace(alias, "*")))
        assert len(set(seen)) == 1 and seen[0][0] == "PROVIDER_NOT_CONFIGURED"
        assert "arn:" not in str(seen) and "123456789012" not in str(seen) and "ymera/" not in str(seen)


def test_a_catalog_secret_outside_the_stage_prefix_is_refused_at_cold_start() -> None:
    endpoints = {"x": {"provider": "openai", "api_key_secret": "ymera/prod/jwt"}}
    with pytest.raises(ConfigError):
        Providers(llm_settings(stage="test", llm_endpoints=json.dumps(endpoints)), environ={})
    with pytest.raises(ConfigError):  # the stage's own key secret must live there too
        Providers(llm_settings(stage="test", llm_provider="openai", llm_model="m",
                               llm_api_key_secret_arn="arn:aws:secretsmanager:us-east-1:123456789012:secret:"
                                                      "ymera/llm/openai-AbC"), environ={})
    with pytest.raises(ConfigError):  # inline keys belong in the Secrets Manager document only
        Providers(llm_settings(llm_endpoints=json.dumps({"x": {"provider": "openai", "api_key": "sk"}})), environ={})


def test_the_catalog_can_live_in_a_secrets_manager_document(server: LLMServer) -> None:
    import boto3
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("secretsmanager", region_name="us-east-1")
        doc = {"vault": {"provider": "openai", "base_url": server.url, "api_key": "sk-in-doc", "models": ["m"]}}
        arn = client.create_secret(Name="ymera/test/llm/catalog", SecretString=json.dumps(doc))["ARN"]
        p = Providers(llm_settings(stage="test", llm_endpoints_secret_arn=arn), environ={},
                      secrets_client_factory=lambda: client)
        p.session(ProviderConfig(endpoint="vault")).complete("hi")
    assert server.requests[0]["headers"]["Authorization"] == "Bearer sk-in-doc"


@pytest.mark.parametrize(("config", "where"), [
    ({"api_key": "sk-live-123"}, "api_key"),  # a key in clear is not a config key at all
    ({"base_url": "file:///etc/passwd"}, "base_url"),
    ({"provider": "bedrock", "base_url": "http://x"}, None),
    ({"key": "mine"}, None),  # a stored key is for your own endpoint only
    ({"endpoint": "Not An Alias"}, "endpoint"),
    ({"temperature": 3}, "temperature"),
    ({"max_wall_seconds": 0}, "max_wall_seconds"),
])
def test_config_refuses_keys_in_clear_and_incoherent_choices(config: dict[str, Any], where: str | None) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        ProviderConfig.model_validate(config)
    if where:
        assert caught.value.errors()[0]["loc"] == (where,)


def test_config_accepts_own_endpoints_and_defaults() -> None:
    cfg = ProviderConfig.model_validate({"provider": "openai", "model": "llama3.2", "key": "ollama-box",
                                         "base_url": "http://ollama:11434/v1"})
    assert (cfg.max_tokens, cfg.timeout_seconds, cfg.max_total_tokens, cfg.max_wall_seconds) == (1024, 30, 20000, 50)


def test_a_provider_check_that_does_not_match_the_endpoint_is_refused(server: LLMServer) -> None:
    settings = llm_settings(llm_provider="bedrock", llm_model="anthropic.claude-3-haiku-20240307-v1:0")
    exc = error_of(lambda: Providers(settings, environ={}).session(ProviderConfig(provider="openai")))
    assert exc.code == "PROVIDER_NOT_CONFIGURED" and "is bedrock, not openai" in exc.message


def test_an_invalid_catalog_fails_tasks_cleanly_without_showing_the_reason() -> None:
    import uuid
    from datetime import UTC, datetime

    from chalicelib.agents.base import AgentContext
    from chalicelib.container import AgentPorts, Container

    settings = llm_settings(llm_endpoints='{"x": {"provider": "openai", "api_key": "sk-inline-secret"}}')
    ctx = AgentContext(task_id=uuid.uuid4(), agent_id=uuid.uuid4(), user_id=uuid.uuid4(), agent_type="llm",
                       now=datetime.now(UTC), ports=AgentPorts(Container(settings)))
    exc = error_of(lambda: LLMAgent().run(LLMInput(prompt="hi"), {"endpoint": "x"}, ctx))
    assert exc.code == "PROVIDER_NOT_CONFIGURED" and "sk-inline" not in exc.message + json.dumps(exc.details)
