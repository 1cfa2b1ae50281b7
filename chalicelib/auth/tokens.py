"""JWT access and refresh tokens: HS256, pinned algorithm, every claim required."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import jwt

from chalicelib.errors import AuthenticationError

ACCESS = "access"
REFRESH = "refresh"
_REQUIRED = ["exp", "iat", "iss", "aud", "sub", "jti", "typ"]


@dataclass(frozen=True)
class Claims:
    user_id: uuid.UUID
    role: str
    token_type: str
    jti: str
    expires_at: datetime
    family: str | None = None


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
              now: datetime | None = None) -> str:
        now = now or datetime.now(timezone.utc)
        ttl = self.access_ttl if token_type == ACCESS else self.refresh_ttl
        claims: dict[str, object] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": str(user_id),
            "role": role,
            "typ": token_type,
            "jti": uuid.uuid4().hex,
            "iat": int(now.timestamp()),
            "exp": int((now + timedelta(seconds=ttl)).timestamp()),
        }
        if family:
            claims["fam"] = family
        return jwt.encode(claims, self._secret, algorithm=self.algorithm)

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
            return Claims(
                user_id=uuid.UUID(str(payload["sub"])),
                role=str(payload.get("role", "user")),
                token_type=str(payload["typ"]),
                jti=str(payload["jti"]),
                expires_at=datetime.fromtimestamp(int(payload["exp"]), timezone.utc),
                family=payload.get("fam"),
            )
        except (jwt.InvalidTokenError, ValueError, TypeError) as exc:
            raise AuthenticationError("invalid or expired token") from exc
