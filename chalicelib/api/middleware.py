"""The HTTP middleware around every route: log context, rate limiting, request metrics.

Per request, one Redis round trip (the token-bucket script; for a signed-in
user the session lookup rides along, see chalicelib.api.identity) and one JWT
signature check, shared with the view. Request metrics are buffered and
written about once a second (chalicelib.services.request_metrics). No database
access: identity for rate limiting is the token's `sub`; whether the session is
still alive is the view's business (an invalid token is simply counted against
the client IP).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from chalice import Response
from chalice.app import Request

from chalicelib import errors
from chalicelib.api import identity
from chalicelib.api.http import to_response
from chalicelib.api.identity import Verified
from chalicelib.config import Settings
from chalicelib.container import Container, get_container
from chalicelib.observability import access_log, logger
from chalicelib.ratelimit import Bucket, Buckets, Decision, LimiterUnavailable, RateLimiter, policy


def http_middleware(request: Request, get_response: Callable[[Request], Response]) -> Response:
    started = time.perf_counter()
    container = get_container()
    context = request.context or {}
    route = str(context.get("resourcePath") or request.path)
    verified = identity.verify(container, request)  # signature and claims only: no database or Redis
    user_id = verified.claims.subject if verified is not None else None
    request_id = context.get("requestId") or getattr(request.lambda_context, "aws_request_id", None)
    # Nothing from a previous request on this thread survives; this request's keys until it ends (what
    # `log_context` does, without a generator per request).
    keys = {name: value for name, value in (("request_id", request_id), ("user_id", user_id)) if value is not None}
    logger.thread_safe_clear_keys()
    logger.thread_safe_append_keys(**keys)
    status = 500
    remembered = identity.remember(request, verified)  # principal() takes it instead of verifying again
    try:
        response = _rate_limited(container, request, get_response, route, verified)
        status = response.status_code
        return response
    finally:
        identity.forget(remembered)
        elapsed = time.perf_counter() - started
        if container.request_metrics is not None:
            container.request_metrics.record(request.method, route, status, elapsed)
        # The access log: one structured line per request, carrying request_id and user_id.
        access_log("request", {"method": request.method, "route": route, "status": status,
                               "duration_ms": round(elapsed * 1000, 3)})
        logger.thread_safe_remove_keys(keys)


def _rate_limited(container: Container, request: Request, get_response: Callable[[Request], Response],
                  route: str, verified: Verified | None) -> Response:
    limiter = container.rate_limiter
    if limiter is None:
        return get_response(request)
    buckets = _buckets(container.settings)
    checks = policy(buckets, request.method, route, user_id=verified.claims.subject if verified else None,
                    client_ip=_client_ip(request))
    if not checks:
        return get_response(request)
    try:
        if verified is not None and checks[0][0] == buckets.user:
            decision = _check_with_session(container, limiter, checks, verified)
        else:
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
        # Sign-in's per-account budgets are the service's (chalicelib.services.login_throttle): they need the
        # resolved account, and count failed guesses only.
        response = get_response(request)
    else:
        response = to_response(errors.RateLimitedError(
            "too many requests; retry later", decision.retry_after,
            {"bucket": decision.bucket, "retry_after_seconds": decision.retry_after}))
    response.headers.update(decision.headers())
    return response


_built: tuple[Settings, Buckets] | None = None


def _buckets(settings: Settings) -> Buckets:
    # By identity, not an lru_cache: hashing Settings (pydantic, ~200 fields) cost more per request than this.
    global _built
    built = _built
    if built is None or built[0] is not settings:
        _built = built = (settings, Buckets.from_settings(settings))
    return built[1]


def _check_with_session(container: Container, limiter: RateLimiter, checks: list[tuple[Bucket, str]],
                        verified: Verified) -> Decision:
    """The user's rate-limit check, with the limiter's script also reading the session lookup for `principal`
    when the guard uses the limiter's Redis client; otherwise the check alone (the view reads the session)."""
    guard = container.sessions
    if not guard.shares(limiter.client):
        return limiter.check(checks)
    try:
        decision, values = limiter.check_reading(checks, guard.lookup_keys(verified.claims))
    except LimiterUnavailable as exc:
        if isinstance(exc.__cause__, Exception):  # Redis failed the round trip: the lookup failed with it
            verified.lookup = guard.unreachable(exc.__cause__)
        raise
    verified.lookup = guard.interpret(values)
    return decision


def _client_ip(request: Request) -> str | None:
    # API Gateway's sourceIp, never X-Forwarded-For: a client can write that header and rotate "IPs" at will.
    caller = (request.context or {}).get("identity") or {}
    ip = caller.get("sourceIp")
    return str(ip) if ip else None
