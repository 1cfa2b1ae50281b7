"""`GET /tasks/{task_id}` on FastAPI + Mangum, doing the same work as the Chalice route, for comparison.

Same work, step for step, as chalicelib/api/middleware.py + chalicelib/api/tasks.py: the token is
verified once (the rate-limit identity), the limiter's Redis script runs with the session lookup in
the same pipeline, the session check uses that reply, the task comes from the same TaskService
(cache), the request metrics are recorded (buffered) and one JSON access-log line is written, all by
the same functions. Only the framework differs.
It is written the way FastAPI favours it (one sync endpoint, no BaseHTTPMiddleware), and Mangum runs
without lifespan: the fastest configuration we know, so "Chalice is faster" is the conservative claim.

Installed only in the bench environment (.venv-bench, bench/requirements.txt).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from mangum import Mangum

from chalicelib import errors
from chalicelib.api.http import _status_for, path_uuid
from chalicelib.api.identity import Verified
from chalicelib.api.middleware import _check_with_session
from chalicelib.auth.tokens import ACCESS
from chalicelib.container import get_container
from chalicelib.observability import log_context, logger
from chalicelib.ratelimit import Buckets, policy

ROUTE = "/tasks/{task_id}"


def _envelope(exc: errors.AppError) -> JSONResponse:
    body = {"error": {"code": exc.code, "message": exc.message, "details": exc.details,
                      "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}
    return JSONResponse(body, status_code=_status_for(exc))


def build() -> Any:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    buckets = Buckets.from_settings(get_container().settings)

    @app.get(ROUTE)
    def get_task(task_id: str, request: Request) -> JSONResponse:
        started = time.perf_counter()
        container = get_container()
        context = request.scope["aws.event"]["requestContext"]
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        try:  # the middleware's rate-limit identity: signature and claims only
            verified = Verified(token, container.tokens.verify(token, ACCESS)) if token else None
        except errors.AuthenticationError:
            verified = None
        user_id = str(verified.claims.user_id) if verified is not None else None
        logger.thread_safe_clear_keys()
        status = 500
        with log_context(request_id=context.get("requestId"), user_id=user_id):
            try:
                checks = policy(buckets, "GET", ROUTE, user_id=user_id, client_ip=context["identity"]["sourceIp"])
                decision = (_check_with_session(container, container.rate_limiter, checks, verified)
                            if verified is not None else container.rate_limiter.check(checks))
                if not decision.allowed:
                    response = _envelope(errors.RateLimitedError("too many requests", decision.retry_after))
                else:
                    try:
                        if not token:
                            raise errors.AuthenticationError("missing bearer token")
                        claims = (container.sessions.check(verified.claims, verified.lookup) if verified is not None
                                  else container.sessions.check(container.tokens.verify(token, ACCESS)))
                        task = container.tasks.get(claims.user_id, path_uuid(task_id, "task"))
                        response = JSONResponse(task.model_dump(mode="json"))
                    except errors.AppError as exc:
                        response = _envelope(exc)
                response.headers.update(decision.headers())
                status = response.status_code
                return response
            finally:
                elapsed = time.perf_counter() - started
                if container.request_metrics is not None:
                    container.request_metrics.record("GET", ROUTE, status, elapsed)
                logger.info("request", extra={"method": "GET", "route": ROUTE, "status": status,
                                              "duration_ms": round(elapsed * 1000, 3)})

    return Mangum(app, lifespan="off")
