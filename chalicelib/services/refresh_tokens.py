"""Refresh-token families in Postgres: issue, rotate (at most once per token), revoke.

Every function works inside the caller's transaction. Rotation is decided by a
conditional UPDATE (`... WHERE used_at IS NULL`): exactly one caller per token
sees a row count of 1.

Everything that changes a family (rotate, revoke on logout or reuse) first
takes the family's lock (`lock_family`: a transaction-scoped Postgres advisory
lock keyed on the family id). Without it a revocation's UPDATE, whose snapshot
predates a concurrent rotation's INSERT, misses the new row and leaves it live;
with it the revocation waits for the rotation to commit and then sees (and
revokes) the successor, or the rotation waits and finds its token revoked. So a
revoked family never gains a live member. SQLite serialises writers anyway
(BEGIN IMMEDIATE), so there the lock is a no-op.

A retried refresh (`grace_successor`): the client presented a token it had
already rotated, within a few seconds, and its successor is still unused. That
is a client that did not receive the answer (a timeout, a dropped connection),
not a replay after theft; it gets the successor back instead of losing the
session. The successor refresh token is re-derived (HS256 is deterministic:
same claims, same secret, same token) from its row, so nothing secret is stored.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from chalicelib.auth.tokens import ACCESS, REFRESH, Claims, IssuedToken, TokenService
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


def lock_family(session: Session, family: uuid.UUID) -> None:
    """Serialise every writer of one family until the end of the caller's transaction (see the module doc)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    key = int.from_bytes(family.bytes[:8], "big", signed=True)  # uuid4: 8 bytes carry ~60 random bits
    session.execute(select(func.pg_advisory_xact_lock(key)))


def grace_successor(session: Session, claims: Claims, now: datetime, grace_seconds: float) -> RefreshToken | None:
    """The live successor of the presented (already used) token, if it was used less than `grace_seconds` ago.

    Call with the family lock held. None: no grace (never used, used too long ago, revoked, or its successor
    was itself used or revoked, i.e. the session moved on and this is a replay).
    """
    if grace_seconds <= 0:
        return None
    row = session.get(RefreshToken, claims.jti)
    if (row is None or row.user_id != claims.user_id or row.used_at is None or row.revoked_at is not None
            or row.replaced_by is None or now - row.used_at > timedelta(seconds=grace_seconds)):
        return None
    successor = session.get(RefreshToken, row.replaced_by)
    if (successor is None or successor.used_at is not None or successor.revoked_at is not None
            or successor.expires_at <= now or successor.family_id != row.family_id):
        return None
    return successor


def reissue_pair(tokens: TokenService, user: User, successor: RefreshToken) -> MintedPair:
    """The successor refresh token again (same claims, so the same string) and a fresh access token."""
    fam = str(successor.family_id)
    refresh = tokens.reissue(Claims(user_id=user.id, role=user.role, token_type=REFRESH, jti=successor.jti,
                                    expires_at=successor.expires_at, family=fam, version=user.token_version,
                                    issued_at=successor.issued_at))
    access = tokens.mint(user.id, user.role, ACCESS, family=fam, version=user.token_version)
    return MintedPair(access=access, refresh=refresh)


def parse_family(value: str | None) -> uuid.UUID | None:
    if value is None:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
