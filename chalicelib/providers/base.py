"""The one interface every language-model provider implements.

A provider turns a `CompletionRequest` into a `Completion` in a single
attempt; timeouts, retries and the circuit breaker wrap it from outside
(`chalicelib.providers.resilience`), so each implementation stays a thin
translation of one wire protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

Role = Literal["user", "assistant"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class CompletionRequest:
    messages: tuple[Message, ...]
    model: str
    system: str | None = None
    max_tokens: int = 1024
    temperature: float = 0.2
    #: seconds for one attempt (connect + response); the caller shortens it to fit the task's deadline.
    timeout: float = 30.0


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    #: True when the endpoint reported no usage and the counts are estimated (~4 characters a token).
    estimated: bool = False

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens,
                     self.total_tokens + other.total_tokens, self.estimated or other.estimated)

    def as_dict(self) -> dict[str, int | bool]:
        data: dict[str, int | bool] = {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                                       "total_tokens": self.total_tokens}
        if self.estimated:
            data["estimated"] = True
        return data


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    usage: Usage
    latency_ms: float
    provider: str
    finish_reason: str | None = None
    #: attempts it took, retries included (set by the resilient wrapper).
    attempts: int = 1
    extra: dict[str, str] = field(default_factory=dict)
    #: answered from the intelligence gateway's prompt cache (no provider call; nothing charged).
    cached: bool = False


class Provider(Protocol):
    #: "openai" (any OpenAI-compatible endpoint) or "bedrock".
    name: str

    def complete(self, request: CompletionRequest) -> Completion:
        """One attempt. Raise a `chalicelib.providers.errors.ProviderError` on failure."""
        ...


def estimate_tokens(text: str) -> int:
    """A rough count for endpoints that report no usage: the limits must still bite."""
    return max(1, (len(text) + 3) // 4) if text else 0
