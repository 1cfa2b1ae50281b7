"""Amazon Bedrock through the Converse API (boto3 `bedrock-runtime`).

The client comes from a factory (one per timeout, built by the registry with
botocore's own retries off — ours wrap the call) so it honours
AWS_ENDPOINT_URL and tests can hand in a client with a botocore Stubber.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from chalicelib.providers.base import Completion, CompletionRequest, Usage
from chalicelib.providers.errors import (
    ProviderAuthError,
    ProviderBadResponseError,
    ProviderError,
    ProviderNotConfiguredError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)

RETRYABLE_CODES = {
    "ThrottlingException": ProviderRateLimitedError,
    "ServiceQuotaExceededException": ProviderRateLimitedError,
    "ServiceUnavailableException": ProviderUnavailableError,
    "InternalServerException": ProviderUnavailableError,
    "ModelNotReadyException": ProviderUnavailableError,
    "ModelTimeoutException": ProviderTimeoutError,
}
AUTH_CODES = {"AccessDeniedException", "UnrecognizedClientException", "ExpiredTokenException"}


class BedrockProvider:
    name = "bedrock"

    def __init__(self, client_for: Callable[[float], Any]) -> None:
        self._client_for = client_for

    def complete(self, request: CompletionRequest) -> Completion:
        kwargs: dict[str, Any] = {
            "modelId": request.model,
            "messages": [{"role": m.role, "content": [{"text": m.content}]} for m in request.messages],
            "inferenceConfig": {"maxTokens": request.max_tokens, "temperature": request.temperature},
        }
        if request.system:
            kwargs["system"] = [{"text": request.system}]
        started = time.perf_counter()
        response = self._call(self._client_for(request.timeout), kwargs, request)
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        try:
            parts = response["output"]["message"]["content"]
            text = "".join(part["text"] for part in parts if "text" in part)
            usage = response.get("usage") or {}
        except (KeyError, TypeError) as exc:
            raise ProviderBadResponseError("Bedrock's answer has no message", {"provider": self.name}) from exc
        input_tokens, output_tokens = int(usage.get("inputTokens", 0)), int(usage.get("outputTokens", 0))
        return Completion(text=text, model=request.model, latency_ms=latency_ms, provider=self.name,
                          usage=Usage(input_tokens, output_tokens,
                                      int(usage.get("totalTokens", input_tokens + output_tokens))),
                          finish_reason=response.get("stopReason"))

    def _call(self, client: Any, kwargs: dict[str, Any], request: CompletionRequest) -> dict[str, Any]:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectTimeoutError,
            NoCredentialsError,
            ReadTimeoutError,
        )

        where = {"provider": self.name, "model": request.model}
        try:
            response: dict[str, Any] = client.converse(**kwargs)
            return response
        except ClientError as exc:
            raise _client_error(exc, where) from exc
        except (ReadTimeoutError, ConnectTimeoutError) as exc:
            raise ProviderTimeoutError(f"Bedrock did not answer within {request.timeout:.3g} s", where) from exc
        except NoCredentialsError as exc:
            raise ProviderNotConfiguredError("no AWS credentials for Bedrock: give the function a role that may "
                                             "call bedrock:InvokeModel", where) from exc
        except BotoCoreError as exc:  # connection closed/refused, endpoint unreachable
            raise ProviderUnavailableError(f"cannot reach Bedrock: {type(exc).__name__}", where) from exc


def _client_error(exc: Any, where: dict[str, Any]) -> ProviderError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    details = {**where, "aws_error": code, "provider_message": str(error.get("Message", ""))[:300]}
    retryable = RETRYABLE_CODES.get(code)
    if retryable is not None:
        return retryable(f"Bedrock failed with {code}", details)
    if code in AUTH_CODES:
        return ProviderAuthError(f"Bedrock refused access ({code}): the role needs bedrock:InvokeModel on the "
                                 "model, and the model must be enabled in the account", details)
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 400) or 400)
    if status >= 500:
        return ProviderUnavailableError(f"Bedrock failed with {code or status}", details)
    return ProviderRejectedError(f"Bedrock rejected the request ({code or status})", details)
