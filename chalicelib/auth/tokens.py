"""JWT access and refresh tokens: HS256, pinned algorithm, every claim required.

Access and refresh tokens differ by the `typ` claim, so one can never stand in
for the other. Both carry the session family (`fam`, the refresh-token family
created at login) and the user's token version (`ver`, bumped on password
change and deactivation) so revocation can be checked per request.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import jwt

from chalicelib.errors import AuthenticationError

ACCESS = "access"
REFRESH = "refresh"
_REQUIRED = ["exp", "iat", "iss", "aud", "sub", "jti", "typ"]
#: the one message every token failure gets: callers learn nothing about why.
INVALID_TOKEN = "invalid or expired token"


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


@dataclass(frozen=True)
class IssuedToken:
    token: str
    claims: Claims


class TokenService:
    def __init__(self, secret: str, *, issuer: str, audience: str, access_ttl: int, refresh_ttl: int,
                 algorithm: str = "HS256") -> None:
        self._secret = secret
        self.issuer = issuer
        self.audience = audience
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.algorithm = algorithm

    def issue(self, user_id: uuid.UUID, role: str, token_type: str, *, family: str | None = None,
              version: int = 0, now: datetime | None = None) -> str:
        return self.mint(user_id, role, token_type, family=family, version=version, now=now).token

    def mint(self, user_id: uuid.UUID, role: str, token_type: str, *, family: str | None = None,
             version: int = 0, now: datetime | None = None) -> IssuedToken:
        """Issue a token and return its claims too (refresh tokens are recorded by jti)."""
        now = (now or datetime.now(timezone.utc)).replace(microsecond=0)
        ttl = self.access_ttl if token_type == ACCESS else self.refresh_ttl
        expires = now + timedelta(seconds=ttl)
        jti = uuid.uuid4().hex
        payload: dict[str, object] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": str(user_id),
            "role": role,
            "typ": token_type,
            "jti": jti,
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "ver": version,
        }
        if family:
            payload["fam"] = family
        token = jwt.encode(payload, self._secret, algorithm=self.algorithm)
        return IssuedToken(token, Claims(user_id=user_id, role=role, token_type=token_type, jti=jti,
                                         expires_at=expires, family=family, version=version, issued_at=now))

    def verify(self, token: str, expected_type: str) -> Claims:
        """Decode and check a token. Every failure is the same generic 401."""
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": _REQUIRED},
            )
            if payload.get("typ") != expected_type:
                raise jwt.InvalidTokenError("wrong token type")
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
