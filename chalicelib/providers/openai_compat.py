"""Any OpenAI-compatible chat-completions endpoint: OpenAI, vLLM, Ollama, llama.cpp server...

`POST {base_url}/chat/completions` with a Bearer key, over the standard
library (no extra runtime dependency). Redirects are refused: following one
would send the key to wherever the endpoint points us. Note that urllib's
timeout applies to each socket operation; the task's deadline bounds the total.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from typing import Any

from chalicelib.providers.base import Completion, CompletionRequest, Usage, estimate_tokens
from chalicelib.providers.errors import (
    ProviderAuthError,
    ProviderBadResponseError,
    ProviderError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)

#: characters of an endpoint's error body echoed in the task's error details.
MAX_ERROR_TEXT = 300
#: a chat completion is text; anything bigger is not an answer we can use (and must not exhaust memory).
MAX_RESPONSE_BYTES = 8 * 1024 * 1024


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx status


class OpenAICompatibleProvider:
    name = "openai"

    def __init__(self, base_url: str, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._opener = urllib.request.build_opener(_NoRedirect)

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
        http_request = urllib.request.Request(f"{self.base_url}/chat/completions", data=json.dumps(body).encode(),
                                              headers=headers, method="POST")
        started = time.perf_counter()
        raw = self._send(http_request, request.timeout)
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        return _parse(raw, request, latency_ms, sum(len(m["content"] or "") for m in messages))

    def _send(self, http_request: urllib.request.Request, timeout: float) -> bytes:
        where = {"provider": self.name, "base_url": self.base_url}
        try:
            with self._opener.open(http_request, timeout=timeout) as response:
                data: bytes = response.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as exc:
            raise _status_error(exc, where) from exc
        except TimeoutError as exc:
            raise ProviderTimeoutError(f"the language model did not answer within {timeout:.3g} s", where) from exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise ProviderTimeoutError(f"the language model did not answer within {timeout:.3g} s",
                                           where) from exc
            raise ProviderUnavailableError(f"cannot reach the language model endpoint: {exc.reason}", where) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise ProviderUnavailableError(f"the connection to the language model failed: {type(exc).__name__}",
                                           where) from exc
        if len(data) > MAX_RESPONSE_BYTES:
            raise ProviderBadResponseError(f"the answer is larger than {MAX_RESPONSE_BYTES} bytes", where)
        return data


def _status_error(exc: urllib.error.HTTPError, where: dict[str, Any]) -> ProviderError:
    status = exc.code
    details = {**where, "status": status, "provider_message": _error_text(exc)}
    retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
    if status == 429:
        return ProviderRateLimitedError("the language model endpoint is rate limiting us (429)", details,
                                        retry_after=retry_after)
    if status == 408 or status >= 500:
        return ProviderUnavailableError(f"the language model endpoint failed ({status})", details,
                                        retry_after=retry_after)
    if status in (401, 403):
        return ProviderAuthError(f"the language model endpoint refused our credentials ({status}); check the "
                                 "API key the agent's config or YMERA_LLM_API_KEY* points at", details)
    if 300 <= status < 400:
        return ProviderRejectedError(f"the endpoint redirected ({status}); set base_url to the final URL", details)
    return ProviderRejectedError(f"the language model endpoint rejected the request ({status})", details)


def _error_text(exc: urllib.error.HTTPError) -> str | None:
    try:
        raw = exc.read(4096)
    except (OSError, http.client.HTTPException):
        return None
    try:
        data = json.loads(raw)
        message = data["error"]["message"] if isinstance(data.get("error"), dict) else data.get("error")
        text = str(message) if message else raw.decode("utf-8", "replace")
    except (ValueError, AttributeError, KeyError, TypeError):
        text = raw.decode("utf-8", "replace")
    return text.strip()[:MAX_ERROR_TEXT] or None


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: rare from these endpoints; fall back to our own backoff


def _parse(raw: bytes, request: CompletionRequest, latency_ms: float, prompt_chars: int) -> Completion:
    try:
        data = json.loads(raw)
        choice = data["choices"][0]
        content = choice["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ProviderBadResponseError("the endpoint's answer is not a chat completion",
                                       {"provider": "openai", "body": raw[:MAX_ERROR_TEXT].decode("utf-8", "replace")}
                                       ) from exc
    if isinstance(content, list):  # content parts, as some servers send them
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    if not isinstance(content, str):
        raise ProviderBadResponseError("the chat completion has no text content", {"provider": "openai"})
    return Completion(text=content, model=str(data.get("model") or request.model),
                      usage=_usage(data.get("usage"), prompt_chars, content), latency_ms=latency_ms,
                      provider="openai", finish_reason=choice.get("finish_reason"))


def _usage(raw: Any, prompt_chars: int, text: str) -> Usage:
    if isinstance(raw, dict) and isinstance(raw.get("prompt_tokens"), int):
        prompt: int = raw["prompt_tokens"]
        completion = raw["completion_tokens"] if isinstance(raw.get("completion_tokens"), int) else 0
        total = raw["total_tokens"] if isinstance(raw.get("total_tokens"), int) else prompt + completion
        return Usage(prompt, int(completion), int(total))
    prompt, completion = max(1, (prompt_chars + 3) // 4), estimate_tokens(text)
    return Usage(prompt, completion, prompt + completion, estimated=True)
