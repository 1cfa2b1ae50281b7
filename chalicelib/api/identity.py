"""The caller's identity, established once per request by the HTTP middleware.

The middleware needs the bearer token's subject before the view runs (whose
rate-limit bucket to use), and the view needs the same token verified and its
session checked (`principal`). Verifying twice costs a JWT decode, and checking
the session apart from the rate limit costs a Redis round trip. So:

- the middleware verifies the token once (signature and claims, no I/O) and
  records the result here for this request;
- when the request is limited by that user's bucket and the limiter and the
  session guard use the same Redis client, the limiter's script also reads the
  session keys (`RateLimiter.check_reading`): both checks, one round trip;
- `principal()` takes the recorded claims and, if present, the prefetched
  lookup; the session check itself (denylist, family, user state, token
  version) is unchanged, just fed from that reply. Read at the start of the
  request like before, so a logout is refused from the very next request on.

Anything else (no or invalid token, the login or exempt routes, a breaker open,
separate clients, a view reading a different request) takes the separate calls.
A recorded identity is bound to its Request object, so it can never serve
another request, even on a thread that skipped the reset.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chalice.app import Request

from chalicelib import errors
from chalicelib.auth.tokens import ACCESS, Claims

if TYPE_CHECKING:  # the guard pulls in SQLAlchemy and redis: not part of the API's cold start
    from chalicelib.auth.guard import Lookup
    from chalicelib.container import Container


@dataclass
class Verified:
    token: str
    claims: Claims
    #: the session lookup read in the rate limiter's round trip; None: `principal` reads it itself.
    lookup: Lookup | None = None


_current: ContextVar[tuple[Request, Verified] | None] = ContextVar("ymera_verified_identity", default=None)


def bearer_token(request: Request) -> str | None:
    scheme, _, token = str((request.headers.get("authorization") if request.headers else None) or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def verify(container: Container, request: Request) -> Verified | None:
    """The request's access token, verified (no database or Redis); None when absent or invalid."""
    token = bearer_token(request)
    if token is None:
        return None
    try:
        return Verified(token, container.tokens.verify(token, ACCESS))
    except errors.AuthenticationError:
        return None


def remember(request: Request, verified: Verified | None) -> object:
    """Record `verified` for `request` until `forget(token)`."""
    return _current.set((request, verified) if verified is not None else None)


def forget(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]


def recorded(request: Request, token: str) -> Verified | None:
    """What the middleware established for this very request and token, if anything."""
    current = _current.get()
    if current is None or current[0] is not request or current[1].token != token:
        return None
    return current[1]
