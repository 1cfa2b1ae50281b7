"""CORS for a console served from another origin: an allow-list setting, empty by default (no headers at all).

Same-origin is the default and needs none of this. With `YMERA_CONSOLE_CORS_ORIGINS` set, a request whose
`Origin` is exactly one of them gets `Access-Control-Allow-Origin` (that origin, never `*`) and a preflight
`OPTIONS` is answered here, before routing. Credentials are bearer tokens in a header, not cookies, so
`Allow-Credentials` is never sent.
"""

from __future__ import annotations

from collections.abc import Callable

from chalice import Response
from chalice.app import Request

from chalicelib.container import get_container

ALLOW_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, Idempotency-Key"
EXPOSE_HEADERS = "Location, Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset"
MAX_AGE = "600"


def cors_middleware(request: Request, get_response: Callable[[Request], Response]) -> Response:
    settings = get_container().settings
    if not settings.console_cors_origins:  # the default: nothing to parse, nothing to add
        return get_response(request)
    allowed = settings.cors_origins
    headers_in = request.headers
    origin = str(headers_in.get("origin") or "").rstrip("/") if headers_in is not None else ""
    if not allowed or origin not in allowed:
        return get_response(request)
    headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    if request.method == "OPTIONS" and headers_in is not None and headers_in.get("access-control-request-method"):
        return Response(body="", status_code=204, headers={
            **headers, "Access-Control-Allow-Methods": ALLOW_METHODS,
            "Access-Control-Allow-Headers": ALLOW_HEADERS, "Access-Control-Max-Age": MAX_AGE})
    response = get_response(request)
    response.headers = {**(response.headers or {}), **headers, "Access-Control-Expose-Headers": EXPOSE_HEADERS}
    return response
