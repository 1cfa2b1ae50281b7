"""Any OpenAI-compatible chat-completions endpoint: OpenAI, vLLM, Ollama, llama.cpp server...

`POST {base_url}/chat/completions` with a Bearer key, over the standard library's http.client
through chalicelib.net.outbound: redirects are never followed (following one would send the key
wherever the endpoint points us), the attempt's timeout is a total deadline (not per socket
operation), and a user-chosen endpoint (`policy` set) is connected to only at a checked address.

What an arbitrary host answers is never copied into the task's error: error bodies are logged,
the user sees the status and a stable code.
"""

from __future__ import annotations

import json
import time
from typing import Any

from chalicelib.net.outbound import (
    OutboundConnectionError,
    OutboundPolicy,
    OutboundRefusedError,
    OutboundTimeoutError,
    OutboundTooLargeError,
    Response,
    post,
)
from chalicelib.observability import logger
from chalicelib.providers.base import Completion, CompletionRequest, Usage, estimate_tokens
from chalicelib.providers.errors import (
    ProviderAuthError,
    ProviderBadResponseError,
    ProviderEndpointRefusedError,
    ProviderError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)

#: characters of an endpoint's error body written to the log (never to the task).
MAX_ERROR_TEXT = 300
#: a chat completion is text; anything bigger is not an answer we can use (and must not exhaust memory).
MAX_RESPONSE_BYTES = 8 * 1024 * 1024


class OpenAICompatibleProvider:
    name = "openai"

    def __init__(self, base_url: str, api_key: str | None = None, *, policy: OutboundPolicy | None = None,
                 label: str = "openai") -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        #: None = a trusted (catalog) endpoint; otherwise the address checks for a user's own endpoint.
        self.policy = policy
        #: how the endpoint is named to the user: a catalog alias or "your endpoint".
        self.label = label

    def __repr__(self) -> str:  # never the key
        return f"OpenAICompatibleProvider({self.base_url!r})"

    def complete(self, request: CompletionRequest) -> Completion:
        messages = [{"role": "system", "content": request.system}] if request.system else []
        messages += [{"role": m.role, "content": m.content} for m in request.messages]
        body = {"model": request.model, "messages": messages, "max_tokens": request.max_tokens,
                "temperature": request.temperature, "stream": False}
        headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "ymera/0.1"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        started = time.perf_counter()
        response = self._send(json.dumps(body).encode(), headers, request.timeout)
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        where = {"provider": self.name, "endpoint": self.label}
        if response.status >= 300:
            raise self._status_error(response, where)
        return self._parse(response.body, request, latency_ms, sum(len(m["content"] or "") for m in messages),
                           where)

    def _send(self, body: bytes, headers: dict[str, str], timeout: float) -> Response:
        where = {"provider": self.name, "endpoint": self.label}
        try:
            return post(f"{self.base_url}/chat/completions", body, headers, timeout=timeout,
                        max_bytes=MAX_RESPONSE_BYTES, policy=self.policy)
        except OutboundRefusedError as exc:
            logger.warning("outbound request refused", extra={"base_url": self.base_url, **exc.details})
            raise ProviderEndpointRefusedError(f"the endpoint cannot be used: {exc.message}",
                                             {**where, "reason": exc.details.get("reason")}) from exc
        except OutboundTimeoutError as exc:
            raise ProviderTimeoutError(f"the language model did not answer within {timeout:.3g} s", where) from exc
        except OutboundTooLargeError as exc:
            raise ProviderBadResponseError(f"the answer is larger than {MAX_RESPONSE_BYTES} bytes", where) from exc
        except OutboundConnectionError as exc:
            logger.warning("language model endpoint unreachable",
                           extra={"base_url": self.base_url, "cause": repr(exc.__cause__)})
            raise ProviderUnavailableError(f"cannot reach the language model endpoint ({exc.message})",
                                           {**where, "reason": exc.details.get("reason")}) from exc

    def _status_error(self, response: Response, where: dict[str, Any]) -> ProviderError:
        status = response.status
        logger.warning("language model endpoint error", extra={"base_url": self.base_url, "status": status,
                                                               "body": _error_text(response.body)})
        details = {**where, "status": status}
        retry_after = _retry_after(response.headers.get("retry-after"))
        if status == 429:
            return ProviderRateLimitedError("the language model endpoint is rate limiting us (429)", details,
                                            retry_after=retry_after)
        if status == 408 or status >= 500:
            return ProviderUnavailableError(f"the language model endpoint failed ({status})", details,
                                            retry_after=retry_after)
        if status in (401, 403):
            return ProviderAuthError(f"the language model endpoint refused our credentials ({status}); check the "
                                     "API key of the endpoint (config.key for your own endpoint)", details)
        if 300 <= status < 400:
            return ProviderRejectedError(f"the endpoint redirected ({status}); set base_url to the final URL",
                                         details)
        return ProviderRejectedError(f"the language model endpoint rejected the request ({status})", details)

    def _parse(self, raw: bytes, request: CompletionRequest, latency_ms: float, prompt_chars: int,
               where: dict[str, Any]) -> Completion:
        try:
            data = json.loads(raw)
            choice = data["choices"][0]
            content = choice["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            logger.warning("language model answer is not a chat completion",
                           extra={"base_url": self.base_url, "body": _error_text(raw)})
            raise ProviderBadResponseError("the endpoint's answer is not a chat completion", where) from exc
        if isinstance(content, list):  # content parts, as some servers send them
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        if not isinstance(content, str):
            raise ProviderBadResponseError("the chat completion has no text content", where)
        return Completion(text=content, model=str(data.get("model") or request.model),
                          usage=_usage(data.get("usage"), prompt_chars, content), latency_ms=latency_ms,
                          provider="openai", finish_reason=choice.get("finish_reason"))


def _error_text(raw: bytes) -> str | None:
    text = raw[:4096].decode("utf-8", "replace")
    try:
        data = json.loads(text)
        message = data["error"]["message"] if isinstance(data.get("error"), dict) else data.get("error")
        text = str(message) if message else text
    except (ValueError, AttributeError, KeyError, TypeError):
        pass  # not JSON: log the raw start
    return text.strip()[:MAX_ERROR_TEXT] or None


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: rare from these endpoints; fall back to our own backoff


def _usage(raw: Any, prompt_chars: int, text: str) -> Usage:
    if isinstance(raw, dict) and isinstance(raw.get("prompt_tokens"), int):
        prompt: int = raw["prompt_tokens"]
        completion = raw["completion_tokens"] if isinstance(raw.get("completion_tokens"), int) else 0
        total = raw["total_tokens"] if isinstance(raw.get("total_tokens"), int) else prompt + completion
        return Usage(prompt, int(completion), int(total))
    prompt, completion = max(1, (prompt_chars + 3) // 4), estimate_tokens(text)
    return Usage(prompt, completion, prompt + completion, estimated=True)
