"""The HTTP middleware around every route: log context, rate limiting, request metrics.

Per request, at most two Redis round trips (the token-bucket script before the
view, the pipelined metric counters after it) and one JWT signature check to
learn whose bucket to use. No database access: identity for rate limiting is
the token's `sub`; whether the session is still alive is the view's business
(an invalid token is simply counted against the client IP).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import lru_cache

from chalice import Response
from chalice.app import Request

from chalicelib import errors
from chalicelib.api.http import to_response
from chalicelib.auth.tokens import ACCESS
from chalicelib.config import Settings
from chalicelib.container import Container, get_container
from chalicelib.observability import log_context, logger
from chalicelib.ratelimit import LOGIN_ROUTE, Buckets, LimiterUnavailable, policy


def http_middleware(request: Request, get_response: Callable[[Request], Response]) -> Response:
    started = time.perf_counter()
    container = get_container()
    context = request.context or {}
    route = str(context.get("resourcePath") or request.path)
    user_id = _user_id(container, request)
    request_id = context.get("requestId") or getattr(request.lambda_context, "aws_request_id", None)
    logger.thread_safe_clear_keys()  # nothing from a previous request on this thread survives
    status = 500
    with log_context(request_id=request_id, user_id=user_id):
        try:
            response = _rate_limited(container, request, get_response, route, user_id)
            status = response.status_code
            return response
        finally:
            elapsed = time.perf_counter() - started
            if container.request_metrics is not None:
                container.request_metrics.record(request.method, route, status, elapsed)
            # The access log: one structured line per request, carrying request_id and user_id.
            logger.info("request", extra={"method": request.method, "route": route, "status": status,
                                          "duration_ms": round(elapsed * 1000, 3)})


def _rate_limited(container: Container, request: Request, get_response: Callable[[Request], Response],
                  route: str, user_id: str | None) -> Response:
    limiter = container.rate_limiter
    if limiter is None:
        return get_response(request)
    login = (request.method, route) == LOGIN_ROUTE
    checks = policy(_buckets(container.settings), request.method, route, user_id=user_id,
                    client_ip=_client_ip(request),
                    login_username=_login_username(request, container.settings.max_body_bytes) if login else None)
    if not checks:
        return get_response(request)
    try:
        decision = limiter.check(checks)
    except LimiterUnavailable as exc:
        if all(bucket.fail_open for bucket, _ in checks):
            return get_response(request)  # fail open: the limiter logged the outage when it tripped
        logger.error("rate limiter unavailable; refusing a fail-closed route", extra={"route": route,
                                                                                        "error": str(exc)})
        response = to_response(errors.DependencyUnavailableError(
            "this operation is temporarily unavailable; try again shortly", {"dependency": "rate_limiter"}))
        response.headers["Retry-After"] = str(max(1, round(limiter.breaker.seconds)))
        return response
    if decision.allowed:
        response = get_response(request)
    else:
        response = to_response(errors.RateLimitedError(
            "too many requests; retry later", decision.retry_after,
            {"bucket": decision.bucket, "retry_after_seconds": decision.retry_after}))
    response.headers.update(decision.headers())
    return response


@lru_cache(maxsize=8)
def _buckets(settings: Settings) -> Buckets:
    return Buckets.from_settings(settings)


def _user_id(container: Container, request: Request) -> str | None:
    """The access token's subject, if its signature and claims check out; no database or Redis."""
    scheme, _, token = str(request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    try:
        return str(container.tokens.verify(token.strip(), ACCESS).user_id)
    except errors.AuthenticationError:
        return None


def _client_ip(request: Request) -> str | None:
    # API Gateway's sourceIp, never X-Forwarded-For: a client can write that header and rotate "IPs" at will.
    identity = (request.context or {}).get("identity") or {}
    ip = identity.get("sourceIp")
    return str(ip) if ip else None


def _login_username(request: Request, max_bytes: int) -> str | None:
    raw = request.raw_body or b""
    if not raw or len(raw) > max_bytes:
        return None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    name = data.get("username") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name.strip() else None
