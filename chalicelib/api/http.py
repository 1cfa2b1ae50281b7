"""The HTTP edge: body parsing, authentication and the one error envelope.

Every route is wrapped by `endpoint`, which maps domain errors to statuses
in exactly one place. Nothing below this layer knows about HTTP.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

from chalice import Response
from chalice.app import Request
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from chalicelib import errors
from chalicelib.agents.registry import pydantic_errors
from chalicelib.api import identity
from chalicelib.auth.tokens import ACCESS, Claims
from chalicelib.container import get_container
from chalicelib.observability import logger
from chalicelib.services.meta import RequestMeta

M = TypeVar("M", bound=BaseModel)

STATUS: dict[type[errors.AppError], int] = {
    errors.BadRequestError: 400,
    errors.ValidationError: 422,
    errors.AuthenticationError: 401,
    errors.AuthorizationError: 403,
    errors.NotFoundError: 404,
    errors.ConflictError: 409,
    errors.RateLimitedError: 429,
    errors.DependencyUnavailableError: 503,
}


def error_response(code: str, message: str, status: int, details: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"code": code, "message": message, "details": details or {},
                      "timestamp": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")}}
    return Response(body=body, status_code=status, headers={"Content-Type": "application/json", **(headers or {})})


def _status_for(exc: errors.AppError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def to_response(exc: errors.AppError) -> Response:
    status = _status_for(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, errors.AuthenticationError):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, errors.RateLimitedError):
        headers["Retry-After"] = str(exc.retry_after)
    if status == 500:
        return error_response("INTERNAL_ERROR", "internal error", 500)
    return error_response(exc.code, exc.message, status, exc.details, headers)


F = TypeVar("F", bound=Callable[..., Any])


def endpoint(fn: F) -> F:
    """Wrap a view: domain errors become the envelope; anything else is a logged 500."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except errors.AppError as exc:
            return to_response(exc)
        except Exception:  # noqa: BLE001 - the one place a bug becomes a logged, generic 500
            logger.exception("unhandled error in %s", fn.__name__)
            return error_response("INTERNAL_ERROR", "internal error", 500)

    return wrapper  # type: ignore[return-value]


def json_body(request: Request, model: type[M]) -> M:
    """Parse a JSON body: malformed is 400, wrong shape or unknown fields are 422."""
    raw = request.raw_body or b""
    if len(raw) > get_container().settings.max_body_bytes:
        raise errors.BadRequestError("request body is too large")
    try:
        data = json.loads(raw) if raw.strip() else None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise errors.BadRequestError("request body is not valid JSON", {"reason": str(exc)}) from exc
    if not isinstance(data, dict):
        raise errors.BadRequestError("request body must be a JSON object")
    return validate(model, data)


def validate(model: type[M], data: Any, prefix: tuple[str, ...] = ()) -> M:
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        raise errors.ValidationError("request validation failed", {"errors": pydantic_errors(exc, prefix)}) from exc


def path_uuid(value: str, what: str) -> uuid.UUID:
    """An id that cannot exist is simply not found."""
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise errors.NotFoundError(f"{what} not found", {f"{what}_id": value}) from exc


def principal(request: Request) -> Claims:
    token = identity.bearer_token(request)
    if token is None:
        raise errors.AuthenticationError("missing bearer token")
    container = get_container()
    # Signature and claims first (no I/O), then the token's current standing: denylist, family, user state
    # (one Redis round trip; see chalicelib.auth.guard). The returned role is the user's role *now*.
    # The middleware has usually done the first already and read the second along with the rate limit.
    known = identity.recorded(request, token)
    if known is not None:
        return container.sessions.check(known.claims, known.lookup)
    return container.sessions.check(container.tokens.verify(token, ACCESS))


def request_meta(request: Request) -> RequestMeta:
    context = request.context or {}
    caller = context.get("identity") or {}
    return RequestMeta(client_ip=caller.get("sourceIp"), request_id=context.get("requestId"))


def ok(model: BaseModel | dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = model.model_dump(mode="json") if isinstance(model, BaseModel) else model
    return Response(body=body, status_code=status, headers={"Content-Type": "application/json", **(headers or {})})
