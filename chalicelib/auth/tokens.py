"""JWT access and refresh tokens: HS256, pinned algorithm, every claim required.

Access and refresh tokens differ by the `typ` claim, so one can never stand in
for the other. Both carry the session family (`fam`, the refresh-token family
created at login) and the user's token version (`ver`, bumped on password
change and deactivation) so revocation can be checked per request.

Verification results are remembered per token string (a bounded LRU per
TokenService, i.e. per secret): a token's signature and claims never change,
and of its checks only `exp` can turn with time (a token not yet valid is
refused and never remembered), so a remembered token is re-checked against
`exp` on every use. A client presents the same access token for its ~15
minutes; the repeat costs a dict lookup instead of a JWT decode.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cached_property, lru_cache

import jwt

from chalicelib.errors import AuthenticationError

ACCESS = "access"
REFRESH = "refresh"
_REQUIRED = ["exp", "iat", "iss", "aud", "sub", "jti", "typ"]
#: the one message every token failure gets: callers learn nothing about why.
INVALID_TOKEN = "invalid or expired token"
#: verified tokens remembered per TokenService (see the module docstring).
VERIFIED_TOKENS_CACHED = 1024


@dataclass(frozen=True)
class Claims:
    user_id: uuid.UUID
    role: str
    token_type: str
    jti: str
    expires_at: datetime
    family: str | None = None
    version: int = 0
    issued_at: datetime | None = None

    @cached_property
    def subject(self) -> str:
        """`user_id` as text (the `sub` claim): rate-limit identity, log key, session key. Computed once per
        Claims, and a verified token's Claims are remembered (`VERIFIED_TOKENS_CACHED`)."""
        return str(self.user_id)


@dataclass(frozen=True)
class IssuedToken:
    token: str
    claims: Claims


class TokenService:
    def __init__(self, secret: str, *, issuer: str, audience: str, access_ttl: int, refresh_ttl: int,
                 algorithm: str = "HS256", clock: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self.issuer = issuer
        self.audience = audience
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.algorithm = algorithm
        self._clock = clock  # wall clock, as PyJWT's exp check: only for re-checking remembered tokens
        # Only successful decodes are cached (lru_cache never stores an exception), so a flood of bad
        # tokens costs what it always did and cannot evict anything but other entries of this bound.
        self._decode_cached = lru_cache(maxsize=VERIFIED_TOKENS_CACHED)(self._decode)

    def issue(self, user_id: uuid.UUID, role: str, token_type: str, *, family: str | None = None,
              version: int = 0, now: datetime | None = None) -> str:
        return self.mint(user_id, role, token_type, family=family, version=version, now=now).token

    def mint(self, user_id: uuid.UUID, role: str, token_type: str, *, family: str | None = None,
             version: int = 0, now: datetime | None = None) -> IssuedToken:
        """Issue a token and return its claims too (refresh tokens are recorded by jti)."""
        now = (now or datetime.now(timezone.utc)).replace(microsecond=0)
        ttl = self.access_ttl if token_type == ACCESS else self.refresh_ttl
        return self.reissue(Claims(user_id=user_id, role=role, token_type=token_type, jti=uuid.uuid4().hex,
                                   expires_at=now + timedelta(seconds=ttl), family=family, version=version,
                                   issued_at=now))

    def reissue(self, claims: Claims) -> IssuedToken:
        """Encode exactly these claims. HS256 is deterministic: the same claims give the same token string,
        which is how a retried refresh gets back the successor it did not receive (nothing secret is stored)."""
        if claims.issued_at is None:
            raise ValueError("a token needs its issue time")
        payload: dict[str, object] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": str(claims.user_id),
            "role": claims.role,
            "typ": claims.token_type,
            "jti": claims.jti,
            "iat": int(claims.issued_at.timestamp()),
            "exp": int(claims.expires_at.timestamp()),
            "ver": claims.version,
        }
        if claims.family:
            payload["fam"] = claims.family
        token = jwt.encode(payload, self._secret, algorithm=self.algorithm)
        return IssuedToken(token, claims)

    def verify(self, token: str, expected_type: str) -> Claims:
        """Decode and check a token. Every failure is the same generic 401."""
        claims = self._decode_cached(token)
        if claims.token_type != expected_type or claims.expires_at.timestamp() <= self._clock():
            raise AuthenticationError(INVALID_TOKEN)
        return claims

    def _decode(self, token: str) -> Claims:
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": _REQUIRED},
            )
            if payload.get("typ") not in (ACCESS, REFRESH):
                raise jwt.InvalidTokenError("unknown token type")
            family = payload.get("fam")
            version = payload.get("ver", 0)
            if (family is not None and not isinstance(family, str)) or type(version) is not int:
                raise jwt.InvalidTokenError("malformed session claims")
            return Claims(
                user_id=uuid.UUID(str(payload["sub"])),
                role=str(payload.get("role", "user")),
                token_type=str(payload["typ"]),
                jti=str(payload["jti"]),
                expires_at=datetime.fromtimestamp(int(payload["exp"]), timezone.utc),
                family=family,
                version=version,
                issued_at=datetime.fromtimestamp(int(payload["iat"]), timezone.utc),
            )
        except (jwt.InvalidTokenError, ValueError, TypeError) as exc:
            raise AuthenticationError(INVALID_TOKEN) from exc
