"""Bedrock's Converse API through a botocore Stubber: the request we send and how each failure maps."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from chalicelib.errors import AgentError
from chalicelib.providers.config import ProviderConfig
from chalicelib.providers.registry import Providers
from tests.llm_server import FakeClock, llm_settings

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
ANSWER = {
    "output": {"message": {"role": "assistant", "content": [{"text": "Five receives."}]}},
    "stopReason": "end_turn",
    "usage": {"inputTokens": 31, "outputTokens": 4, "totalTokens": 35},
    "metrics": {"latencyMs": 412},
}


@pytest.fixture
def stubbed() -> Any:
    client = boto3.client("bedrock-runtime", region_name="us-east-1")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def providers(client: Any, clock: FakeClock | None = None, **settings: Any) -> Providers:
    clock = clock or FakeClock()
    settings = {"llm_provider": "bedrock", "llm_model": MODEL, **settings}  # the stage's "default" endpoint
    return Providers(llm_settings(**settings), environ={}, clock=clock, sleep=clock.sleep, rng=lambda: 1.0,
                     bedrock_client_factory=lambda timeout: client)


def test_converse_request_and_answer(stubbed: Any) -> None:
    client, stubber = stubbed
    stubber.add_response("converse", ANSWER, {
        "modelId": MODEL,
        "system": [{"text": "Be brief."}],
        "messages": [{"role": "user", "content": [{"text": "What is a DLQ?"}]},
                     {"role": "assistant", "content": [{"text": "A queue for failed messages."}]},
                     {"role": "user", "content": [{"text": "After how many receives?"}]}],
        "inferenceConfig": {"maxTokens": 200, "temperature": 0.0},
    })
    from chalicelib.providers.base import Message

    s = providers(client).session(ProviderConfig(provider="bedrock", model=MODEL, max_tokens=200, temperature=0))
    result = s.complete([Message("user", "What is a DLQ?"), Message("assistant", "A queue for failed messages."),
                         Message("user", "After how many receives?")], system="Be brief.")
    assert (result.text, result.provider, result.model, result.finish_reason) == (
        "Five receives.", "bedrock", MODEL, "end_turn")
    assert result.usage.as_dict() == {"input_tokens": 31, "output_tokens": 4, "total_tokens": 35}
    assert s.metrics()["total_tokens"] == 35


def test_throttling_is_retried_then_succeeds(stubbed: Any) -> None:
    client, stubber = stubbed
    stubber.add_client_error("converse", "ThrottlingException", "Too many requests", 429)
    stubber.add_client_error("converse", "ServiceUnavailableException", "busy", 503)
    stubber.add_response("converse", ANSWER)
    clock = FakeClock()
    result = providers(client, clock).session(ProviderConfig(provider="bedrock", model=MODEL)).complete("hi")
    assert result.attempts == 3 and clock.sleeps == [0.5, 1.0]


@pytest.mark.parametrize(("aws_code", "status", "code", "calls"), [
    ("ValidationException", 400, "PROVIDER_REJECTED", 1),
    ("ResourceNotFoundException", 404, "PROVIDER_REJECTED", 1),
    ("AccessDeniedException", 403, "PROVIDER_AUTH_FAILED", 1),
    ("ModelTimeoutException", 408, "PROVIDER_TIMEOUT", 3),
    ("InternalServerException", 500, "PROVIDER_UNAVAILABLE", 3),
])
def test_errors_map_to_codes_and_only_transient_ones_are_retried(stubbed: Any, aws_code: str, status: int,
                                                                 code: str, calls: int) -> None:
    client, stubber = stubbed
    for _ in range(calls):
        stubber.add_client_error("converse", aws_code, "nope", status)
    with pytest.raises(AgentError) as caught:
        providers(client).session(ProviderConfig(provider="bedrock", model=MODEL)).complete("hi")
    assert caught.value.code == code and caught.value.details["aws_error"] == aws_code
    assert caught.value.details["attempts"] == calls


def test_the_stage_can_name_bedrock_and_the_client_honours_aws_endpoint_url() -> None:
    p = Providers(llm_settings(llm_provider="bedrock", llm_model=MODEL, AWS_ENDPOINT_URL="http://localhost:4566"),
                  environ={})
    endpoint = p.resolve(ProviderConfig())
    assert endpoint.describe() == {"name": "bedrock", "model": MODEL, "endpoint": "default"}
    client = p._bedrock_client(12.5)
    assert client.meta.endpoint_url == "http://localhost:4566"
    assert client.meta.config.read_timeout == 13 and client.meta.config.retries["total_max_attempts"] == 1
    assert p._bedrock_client(12.1) is client  # one client per whole-second timeout
