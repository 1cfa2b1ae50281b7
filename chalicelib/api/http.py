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
from typing import TYPE_CHECKING, Any, TypeVar

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
from chalicelib.schemas.common import MAX_JSON_DEPTH, RenderedOnce
from chalicelib.services.meta import RequestMeta

if TYPE_CHECKING:
    from chalicelib.services.idempotency import IdempotentRequest

M = TypeVar("M", bound=BaseModel)

STATUS: dict[type[errors.AppError], int] = {
    errors.BadRequestError: 400,
    errors.ValidationError: 422,
    errors.AuthenticationError: 401,
    errors.AuthorizationError: 403,
    errors.NotFoundError: 404,
    errors.MethodNotAllowedError: 405,
    errors.ConflictError: 409,
    errors.UnsupportedMediaTypeError: 415,
    errors.RateLimitedError: 429,
    errors.DependencyUnavailableError: 503,
}


def envelope(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {},
                      "timestamp": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")}}


def error_response(code: str, message: str, status: int, details: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    return Response(body=envelope(code, message, details), status_code=status,
                    headers={"Content-Type": "application/json", **(headers or {})})


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
    if isinstance(exc, errors.RateLimitedError | errors.DependencyUnavailableError):
        headers["Retry-After"] = str(exc.retry_after)
    if status == 500:
        return error_response("INTERNAL_ERROR", "internal error", 500)
    return error_response(exc.code, exc.message, status, exc.details, headers)


def dependency_unavailable(exc: BaseException) -> errors.DependencyUnavailableError | None:
    """The one place a lost database or Redis connection becomes a 503: Postgres refusing or dropping
    connections (SQLAlchemy's OperationalError/InterfaceError, or any DBAPI error that invalidated its
    connection), the pool's checkout timeout, and Redis connection errors and timeouts. Anything else is None
    (a bug: a 500). The pool (IdlePing, and SQLAlchemy invalidating the whole pool on a disconnect) then
    hands out live connections again on the first request after the database is back."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from sqlalchemy import exc as sa

    if isinstance(exc, sa.TimeoutError) or (
            isinstance(exc, sa.DBAPIError)
            and (exc.connection_invalidated or isinstance(exc, sa.OperationalError | sa.InterfaceError))):
        dependency = "database"
    elif isinstance(exc, RedisConnectionError | RedisTimeoutError):
        dependency = "redis"
    else:
        return None
    logger.warning("dependency unavailable", extra={"dependency": dependency, "error": type(exc).__name__})
    return errors.DependencyUnavailableError(f"the {dependency} is temporarily unavailable; try again shortly",
                                             {"dependency": dependency})


F = TypeVar("F", bound=Callable[..., Any])


def endpoint(fn: F) -> F:
    """Wrap a view: domain errors become the envelope; anything else is a logged 500."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except errors.AppError as exc:
            return to_response(exc)
        except Exception as exc:  # noqa: BLE001 - the one place a bug becomes a logged, generic 500
            unavailable = dependency_unavailable(exc)
            if unavailable is not None:
                return to_response(unavailable)
            logger.exception("unhandled error in %s", fn.__name__)
            return error_response("INTERNAL_ERROR", "internal error", 500)

    return wrapper  # type: ignore[return-value]


def parse_json(raw: bytes | str) -> Any:
    """JSON text to Python, refusing nesting deeper than MAX_JSON_DEPTH (400) before anything walks it.

    NaN and Infinity parse (Python's json accepts them, and 1e999 overflows to inf anyway); the schema types
    refuse them with the field's path (chalicelib.schemas.common.JsonObject).
    """
    try:
        data = json.loads(raw)
    except RecursionError as exc:  # deeper than the interpreter's stack: certainly deeper than the limit
        raise _too_deep() from exc
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, and ints over 4300 digits
        raise errors.BadRequestError("request body is not valid JSON", {"reason": str(exc)[:200]}) from exc
    if json_depth(data) > MAX_JSON_DEPTH:
        raise _too_deep()
    return data


def _too_deep() -> errors.BadRequestError:
    return errors.BadRequestError(f"request body is nested more than {MAX_JSON_DEPTH} levels deep",
                                  {"max_depth": MAX_JSON_DEPTH})


def json_depth(value: Any) -> int:
    """Nesting depth of parsed JSON (a scalar is 0, `[]` is 1): level by level, stopping once past the limit."""
    depth, level = 0, [value] if isinstance(value, dict | list) else []
    while level and depth <= MAX_JSON_DEPTH:
        depth += 1
        level = [child for node in level for child in (node.values() if isinstance(node, dict) else node)
                 if isinstance(child, dict | list)]
    return depth


def json_body(request: Request, model: type[M]) -> M:
    """Parse a JSON body: malformed or too deep is 400, wrong shape or unknown fields are 422."""
    raw = request.raw_body or b""
    if len(raw) > get_container().settings.max_body_bytes:
        raise errors.BadRequestError("request body is too large")
    data = parse_json(raw) if raw.strip() else None
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


def idempotency_key(request: Request, scope: str, body: BaseModel) -> IdempotentRequest | None:
    """The request's `Idempotency-Key` (checked: 422 if malformed) with its hash, or None without the header.
    `scope` names the operation ("POST /tasks"); `body` is the validated request model."""
    from chalicelib.services.idempotency import HEADER, idempotent_request

    value = request.headers.get(HEADER.lower()) if request.headers is not None else None
    if value is None:
        return None
    return idempotent_request(value, scope, body.model_dump(mode="json"))


def replay_headers(replayed: bool) -> dict[str, str]:
    from chalicelib.services.idempotency import REPLAYED_HEADER

    return {REPLAYED_HEADER: "true"} if replayed else {}


def ok(model: BaseModel | dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body: Any = model
    if isinstance(model, RenderedOnce):
        body = model.json_text()  # a string body goes out as it is
    elif isinstance(model, BaseModel):
        body = model.model_dump(mode="json")
    return Response(body=body, status_code=status, headers={"Content-Type": "application/json", **(headers or {})})


#: Chalice answers some requests itself, before or around a view, with a `{"Code", "Message"}` body.
_CHALICE_ANSWERS: dict[int, type[errors.AppError]] = {
    400: errors.BadRequestError, 405: errors.MethodNotAllowedError, 415: errors.UnsupportedMediaTypeError}


def envelope_middleware(request: Request, get_response: Callable[[Request], Response]) -> Response:
    """The outermost HTTP middleware: Chalice's own answers (405, 415, a 500 from a failing middleware)
    use the error envelope too. Without it, anything raised outside a view — where `endpoint` cannot
    see it — reached the client as Chalice's raw `{"Code": "InternalServerError", ...}`."""
    try:
        response = get_response(request)
    except errors.AppError as exc:
        return to_response(exc)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: a logged, generic 500 in the envelope
        unavailable = dependency_unavailable(exc)
        if unavailable is not None:
            return to_response(unavailable)
        logger.exception("unhandled error outside a view", extra={"path": getattr(request, "path", None)})
        return error_response("INTERNAL_ERROR", "internal error", 500)
    body = response.body
    if isinstance(body, dict) and set(body) == {"Code", "Message"}:
        return _from_chalice(request, response)
    return response


def _from_chalice(request: Request, response: Response) -> Response:
    status = response.status_code
    cls = _CHALICE_ANSWERS.get(status)
    headers = {k: v if isinstance(v, str) else ", ".join(v)
               for k, v in (response.headers or {}).items() if k.lower() != "content-type"}
    if cls is None:  # Chalice's generic 500 (e.g. an exception in a view it ran without `endpoint`)
        return error_response("INTERNAL_ERROR", "internal error", 500, headers=headers)
    details: dict[str, Any] = {}
    if cls is errors.MethodNotAllowedError:
        message = f"method {request.method} is not allowed on this path"
        details = {"method": request.method,
                   "allowed": [m.strip() for m in str(headers.get("Allow", "")).split(",") if m.strip()]}
    elif cls is errors.UnsupportedMediaTypeError:
        message = "unsupported media type; send application/json"
        details = {"content_type": str(request.headers.get("content-type", ""))[:100],
                   "supported": ["application/json"]}
    else:
        message = str(response.body["Message"])[:500]
    return error_response(cls.code, message, status, details, headers)
