"""Refresh-token families in Postgres: issue, rotate (at most once per token), revoke.

Every function works inside the caller's transaction. Rotation is decided by a
conditional UPDATE (`... WHERE used_at IS NULL`): under concurrency the
database serialises the two writers on the row and exactly one sees a row
count of 1; the other finds the token already used, which is reuse.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from chalicelib.auth.tokens import ACCESS, REFRESH, IssuedToken, TokenService
from chalicelib.db.models import RefreshToken, User
from chalicelib.schemas.users import TokenPair


@dataclass(frozen=True)
class MintedPair:
    access: IssuedToken
    refresh: IssuedToken

    def public(self, tokens: TokenService) -> TokenPair:
        return TokenPair(access_token=self.access.token, refresh_token=self.refresh.token,
                         expires_in=tokens.access_ttl, refresh_expires_in=tokens.refresh_ttl)


def mint_pair(tokens: TokenService, user: User, family: uuid.UUID) -> MintedPair:
    """Both tokens carry the family and the user's current token version."""
    fam = str(family)
    return MintedPair(
        access=tokens.mint(user.id, user.role, ACCESS, family=fam, version=user.token_version),
        refresh=tokens.mint(user.id, user.role, REFRESH, family=fam, version=user.token_version),
    )


def record(session: Session, pair: MintedPair, family: uuid.UUID) -> None:
    """Store the refresh token of a freshly minted pair (its jti is the primary key)."""
    claims = pair.refresh.claims
    assert claims.issued_at is not None  # mint always sets it
    session.add(RefreshToken(jti=claims.jti, family_id=family, user_id=claims.user_id, issued_at=claims.issued_at,
                             expires_at=claims.expires_at))


def retire(session: Session, jti: str, user_id: uuid.UUID, replaced_by: str, now: datetime) -> bool:
    """Mark a live refresh token used. True for exactly one caller per token, however many race."""
    result = session.execute(
        update(RefreshToken)
        .where(RefreshToken.jti == jti, RefreshToken.user_id == user_id, RefreshToken.used_at.is_(None),
               RefreshToken.revoked_at.is_(None), RefreshToken.expires_at > now)
        .values(used_at=now, replaced_by=replaced_by)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


def revoke_family(session: Session, family: uuid.UUID, now: datetime, user_id: uuid.UUID | None = None) -> int:
    stmt = update(RefreshToken).where(RefreshToken.family_id == family, RefreshToken.revoked_at.is_(None))
    if user_id is not None:  # a caller may only ever revoke their own families
        stmt = stmt.where(RefreshToken.user_id == user_id)
    result = session.execute(stmt.values(revoked_at=now).execution_options(synchronize_session=False))
    return int(result.rowcount)  # type: ignore[attr-defined]


def revoke_user(session: Session, user_id: uuid.UUID, now: datetime) -> int:
    """Every family of the user (password change, deactivation)."""
    result = session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def parse_family(value: str | None) -> uuid.UUID | None:
    if value is None:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
