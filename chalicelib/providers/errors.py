"""Why a provider call failed, as stable codes a task's `error.code` carries.

They are `AgentError`s, so a provider-backed task that hits one is marked
failed with the code, message and details (never retried blindly by SQS).
`retryable` says whether another attempt could succeed (timeouts, connection
errors, 429, 5xx): only those are retried, and only those count towards
opening the circuit breaker — a 400 is the caller's fault, not an outage.
"""

from __future__ import annotations

from typing import Any

from chalicelib.errors import AgentError, DependencyUnavailableError


class ProviderError(AgentError):
    code = "PROVIDER_ERROR"
    retryable = False

    def __init__(self, message: str, details: dict[str, Any] | None = None, *,
                 retry_after: float | None = None) -> None:
        super().__init__(message, details)
        #: seconds the endpoint asked us to wait (HTTP Retry-After), if any.
        self.retry_after = retry_after


class ProviderNotConfiguredError(ProviderError):
    """No provider (or no model, or no key) for this agent: the message names what to set."""

    code = "PROVIDER_NOT_CONFIGURED"


class ProviderEndpointRefusedError(ProviderNotConfiguredError):
    """A user's own endpoint is not one we connect to (plain http outside development, a private address...)."""

    code = "PROVIDER_ENDPOINT_REFUSED"


class BudgetExceededError(AgentError):
    """The user's daily token budget on the operator's endpoints is spent (YMERA_LLM_DAILY_TOKEN_BUDGET_PER_USER)."""

    code = "BUDGET_EXCEEDED"


class ProviderUnavailableError(ProviderError):
    """Connection refused/reset, 5xx, or the circuit breaker is open."""

    code = "PROVIDER_UNAVAILABLE"
    retryable = True


class CircuitOpenError(ProviderUnavailableError):
    """Failing fast: the endpoint failed repeatedly and is cooling down. Not retried within the task."""

    retryable = False


class ProviderTimeoutError(ProviderError):
    code = "PROVIDER_TIMEOUT"
    retryable = True


class ProviderRateLimitedError(ProviderError):
    code = "PROVIDER_RATE_LIMITED"
    retryable = True


class ProviderRejectedError(ProviderError):
    """The endpoint refused the request itself (400, 404, 422: unknown model, context too long...)."""

    code = "PROVIDER_REJECTED"


class ProviderAuthError(ProviderError):
    """401/403: the key is wrong, expired, or lacks access to the model."""

    code = "PROVIDER_AUTH_FAILED"


class ProviderBadResponseError(ProviderError):
    """The endpoint answered 2xx with something that is not a usable completion."""

    code = "PROVIDER_BAD_RESPONSE"


class TokenLimitExceededError(AgentError):
    code = "TOKEN_LIMIT_EXCEEDED"


class TimeLimitExceededError(AgentError):
    code = "TIME_LIMIT_EXCEEDED"


class KeyStorageUnavailableError(DependencyUnavailableError):
    """Users' provider keys cannot be stored or read: no YMERA_PROVIDER_KEY_ENCRYPTION_KEY outside development."""

    code = "PROVIDER_KEY_STORAGE_UNAVAILABLE"
