"""Domain exceptions. No HTTP here: `chalicelib.api.errors` maps them to the
error envelope in one place, and their class names are the Retry/Catch
contract used by state machines and consumers."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    """Base of every error a caller may see. `code` is stable; `message` is for humans."""

    code = "INTERNAL_ERROR"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class BadRequestError(AppError):
    """The request could not be read (malformed JSON, wrong content)."""

    code = "BAD_REQUEST"


class ValidationError(AppError):
    """The request was read but its content is invalid."""

    code = "VALIDATION_ERROR"


class AuthenticationError(AppError):
    code = "AUTHENTICATION_ERROR"


class AuthorizationError(AppError):
    code = "AUTHORIZATION_ERROR"


class NotFoundError(AppError):
    code = "NOT_FOUND"


class ConflictError(AppError):
    code = "CONFLICT"


class RateLimitedError(AppError):
    code = "RATE_LIMITED"

    def __init__(self, message: str, retry_after: int, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details)
        self.retry_after = retry_after


class MethodNotAllowedError(AppError):
    """The path exists but not with this method (`details.allowed` lists the ones it has)."""

    code = "METHOD_NOT_ALLOWED"


class UnsupportedMediaTypeError(AppError):
    """The request's Content-Type is not one the route reads."""

    code = "UNSUPPORTED_MEDIA_TYPE"


class DependencyUnavailableError(AppError):
    """A backing service (Postgres, Redis, a key store) cannot be reached: 503 with Retry-After."""

    code = "DEPENDENCY_UNAVAILABLE"
    #: Seconds a client should wait before trying again (the Retry-After header).
    retry_after = 5


class NoAgentAvailableError(ConflictError):
    """A task sent to an agent type found no active agent of that type with a free slot."""

    code = "NO_AGENT_AVAILABLE"


class LeaseNotHeldError(ConflictError):
    """A worker reported on a task it does not hold (already finished, cancelled, or leased again)."""

    code = "LEASE_NOT_HELD"


class AgentInactiveError(ConflictError):
    code = "AGENT_INACTIVE"


# --- idempotency keys (docs/delivery.md) ----------------------------------------------------------------------


class IdempotencyKeyReusedError(ConflictError):
    """An `Idempotency-Key` already used with a different request body (or operation): 409."""

    code = "IDEMPOTENCY_KEY_REUSED"


class IdempotencyKeyInProgressError(ConflictError):
    """The first request with this `Idempotency-Key` has not finished: 409, retry shortly."""

    code = "IDEMPOTENCY_KEY_IN_PROGRESS"


# --- errors raised while processing messages (never shown as HTTP) -------------


class MalformedMessageError(AppError):
    """An SQS record that can never be processed: it goes to the DLQ."""

    code = "MALFORMED_MESSAGE"


class AgentError(AppError):
    """The agent could not complete the task; the task is marked failed with it."""

    code = "AGENT_ERROR"


class AgentInputError(AgentError):
    code = "AGENT_INPUT_INVALID"


class TaskCancelledError(AgentError):
    """The task was cancelled while its agent ran: raised by `AgentContext.raise_if_cancelled` (and before a model
    call) so the agent stops; the consumer discards whatever it had and the task stays `cancelled`."""

    code = "TASK_CANCELLED"


class RetryLaterError(RuntimeError):
    """A record to retry after `delay_seconds` (SQS ChangeMessageVisibility): a retryable agent failure.

    Not an AppError: it never reaches a user; the consumer reports the record as a batch item failure.
    """

    def __init__(self, delay_seconds: int, reason: str) -> None:
        super().__init__(reason)
        self.delay_seconds = delay_seconds


# --- tenancy quotas (docs/tenancy.md) ---------------------------------------------------------------------------


class QuotaExceededError(ConflictError):
    """A standing quota is full (agents per user): 409 until something is deleted."""

    code = "QUOTA_EXCEEDED"


class DailyQuotaExceededError(RateLimitedError):
    """A per-day quota is spent (tasks per user per UTC day): 429 with Retry-After until the next UTC day."""

    code = "QUOTA_EXCEEDED"


class FieldTooLargeError(ValidationError):
    """A JSON field over its size limit (an agent's metadata or config): 422."""

    code = "FIELD_TOO_LARGE"


class WallClockExceededError(AgentError):
    """The agent ran past its wall-clock budget (chalicelib.agents.sandbox) and was stopped.

    The same code as a provider call over `max_wall_seconds` (chalicelib.providers.errors.TimeLimitExceededError):
    to the user both say the task ran out of time.
    """

    code = "TIME_LIMIT_EXCEEDED"


class MemoryLimitExceededError(AgentError):
    """The agent needed more memory than its budget (chalicelib.agents.sandbox) and was stopped."""

    code = "MEMORY_LIMIT_EXCEEDED"


# --- workflows and runs (issue 9; docs/workflows-api.md) ---------------------------------------------------------


class WorkflowInvalidError(ValidationError):
    """A workflow definition with violations: 422, `details.violations` lists every one ({path, code, message})."""

    code = "WORKFLOW_INVALID"


class WorkflowNotFoundError(NotFoundError):
    """No such workflow for this user (another user's, or deleted): 404."""

    code = "WORKFLOW_NOT_FOUND"


class RunNotFoundError(NotFoundError):
    code = "RUN_NOT_FOUND"


class RunInputInvalidError(ValidationError):
    """A run's input does not match its workflow version's input_schema: 422 with `details.errors`."""

    code = "RUN_INPUT_INVALID"


class RunNotCancellableError(ConflictError):
    code = "RUN_NOT_CANCELLABLE"


class RunNotRedrivableError(ConflictError):
    code = "RUN_NOT_REDRIVABLE"


class ApprovalNotPendingError(ConflictError):
    """The step is not an approval waiting for its decision (not reached yet, or not an approval): 409."""

    code = "APPROVAL_NOT_PENDING"


class ApprovalAlreadyDecidedError(ConflictError):
    code = "APPROVAL_ALREADY_DECIDED"


# --- engines over HTTP (POST /engines/{name}; docs/engines.md) ----------------------------------------------------
# A workflow step fails with chalicelib.engines.registry's step errors (same codes); the API answers these.


class EngineUnknownError(NotFoundError):
    """No engine of that name is registered: 404, `details.available` lists those that are."""

    code = "ENGINE_NOT_FOUND"


class EngineRequestInvalidError(ValidationError):
    """The input does not match the engine's input schema (or the engine refused it): 422 with details."""

    code = "ENGINE_INPUT_INVALID"


# --- webhooks (docs/webhooks.md) --------------------------------------------------------------------------------


class WebhookNotFoundError(NotFoundError):
    """No such subscription (or delivery) of the caller's: another user's is not found either."""

    code = "WEBHOOK_NOT_FOUND"


class WebhookUrlRefusedError(ValidationError):
    """The URL is not one deliveries may go to (scheme, or an address in a refused range): 422."""

    code = "WEBHOOK_URL_REFUSED"


class WebhookDisabledError(ConflictError):
    """A test or redelivery for a disabled subscription: re-enable it first (PUT status=active)."""

    code = "WEBHOOK_DISABLED"
