"""Registration, login, refresh and logout.

bcrypt runs here only on register and login (and in accounts.py on password
change); refresh and logout are signature checks plus one conditional UPDATE,
under the family's lock (chalicelib.services.refresh_tokens).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from chalicelib.auth.guard import SessionGuard, SessionsEnded
from chalicelib.auth.passwords import PasswordHasher
from chalicelib.auth.tokens import INVALID_TOKEN, REFRESH, Claims, TokenService
from chalicelib.db.models import RefreshToken, User
from chalicelib.db.session import Database
from chalicelib.db.types import utcnow
from chalicelib.domain.rbac import Role
from chalicelib.errors import AuthenticationError, ConflictError
from chalicelib.ratelimit import account_identity
from chalicelib.schemas.users import LoginRequest, RegisterRequest, TokenPair
from chalicelib.services import audit
from chalicelib.services import refresh_tokens as store
from chalicelib.services.login_throttle import LoginThrottle
from chalicelib.services.meta import RequestMeta

INVALID_CREDENTIALS = "invalid username or password"


class UserService:
    def __init__(self, db: Database, hasher: PasswordHasher, tokens: TokenService, guard: SessionGuard,
                 throttle: LoginThrottle | None = None, *, refresh_grace_seconds: float = 10.0,
                 sessions_ended: SessionsEnded | None = None) -> None:
        self.db = db
        self.hasher = hasher
        self.tokens = tokens
        self.guard = guard
        self.throttle = throttle
        #: told when sessions end, to close what was opened with them (WebSocket connections); never raises.
        self.sessions_ended = sessions_ended
        #: a token rotated less than this long ago is a retry (its successor is returned), not a replay.
        self.refresh_grace_seconds = refresh_grace_seconds

    def register(self, req: RegisterRequest, meta: RequestMeta, *, role: Role = Role.USER,
                 via: str = "api") -> User:
        """Only the admin CLI passes another role; the HTTP body cannot (RegisterRequest forbids it)."""
        password_hash = self.hasher.hash(req.password)
        try:
            with self.db.transaction() as session:
                taken = session.scalar(
                    select(User.id).where(or_(User.username == req.username, User.email == req.email)).limit(1)
                )
                if taken is not None:
                    raise ConflictError("username or email is already registered")
                user = User(username=req.username, email=req.email, password_hash=password_hash, role=role)
                session.add(user)
                session.flush()
                audit.record(session, user_id=user.id, event_type="auth.register", action="create",
                             resource_type="user", resource_id=user.id, details={"role": role.value, "via": via},
                             meta=meta)
        except IntegrityError as exc:  # lost a race with a concurrent registration
            raise ConflictError("username or email is already registered") from exc
        return user

    def login(self, req: LoginRequest, meta: RequestMeta) -> TokenPair:
        """Unknown user, wrong password and deactivated account: same 401, same bcrypt work, same budgets
        (chalicelib.services.login_throttle: failures per account and per (account, address))."""
        with self.db.transaction() as session:
            user = session.scalar(
                select(User).where(or_(User.username == req.username, User.email == req.username.lower()))
            )
            account = str(user.id) if user is not None else f"name:{account_identity(req.username)}"
            attempt = self.throttle.begin(account, meta.client_ip) if self.throttle is not None else None
            ok = self.hasher.verify(req.password, user.password_hash if user else None)
            if not ok or user is None or not user.is_active:
                audit.record(session, user_id=user.id if user else None, event_type="auth.login_failed",
                             action="login", resource_type="user",
                             details={"reason": "inactive" if ok and user else "bad_credentials"}, meta=meta)
                pair = None
            else:
                family = uuid.uuid4()  # every login starts a new session family
                pair = store.mint_pair(self.tokens, user, family)
                store.record(session, pair, family)
                audit.record(session, user_id=user.id, event_type="auth.login", action="login",
                             resource_type="user", resource_id=user.id, details={"family": str(family)},
                             meta=meta)
        if pair is None:
            if attempt is not None:
                attempt.failed()
            raise AuthenticationError(INVALID_CREDENTIALS)
        if attempt is not None:
            attempt.succeeded()
        return pair.public(self.tokens)

    def refresh(self, refresh_token: str, meta: RequestMeta) -> TokenPair:
        """Rotate: a new pair for a live refresh token, which is retired. A retired one revokes its family,
        unless it was retired within the grace window and its successor is unused: then this is the client
        retrying a refresh whose answer it lost, and it gets that successor again."""
        claims = self.tokens.verify(refresh_token, REFRESH)
        family = store.parse_family(claims.family)
        if family is None:
            raise AuthenticationError(INVALID_TOKEN)
        rotated: store.MintedPair | None = None
        reused = False
        with self.db.transaction() as session:
            store.lock_family(session, family)
            now = utcnow()  # after the lock: a waiter measures the grace window from when it got its turn
            # FOR SHARE: a password change or deactivation (FOR UPDATE on the user) waits for this rotation to
            # commit, so its revoke_user sees the new row, or this one waits and sees the new token version.
            user = session.get(User, claims.user_id, with_for_update={"read": True})
            if user is None or not user.is_active or user.token_version != claims.version:
                raise AuthenticationError(INVALID_TOKEN)
            pair = store.mint_pair(self.tokens, user, family)
            if store.retire(session, claims.jti, user.id, pair.refresh.claims.jti, now):
                store.record(session, pair, family)
                audit.record(session, user_id=user.id, event_type="auth.refresh", action="refresh",
                             resource_type="user", resource_id=user.id, details={"family": str(family)}, meta=meta)
                rotated = pair
            elif (successor := store.grace_successor(session, claims, now, self.refresh_grace_seconds)) is not None:
                rotated = store.reissue_pair(self.tokens, user, successor)
                audit.record(session, user_id=user.id, event_type="auth.refresh_retried", action="refresh",
                             resource_type="user", resource_id=user.id,
                             details={"family": str(family), "successor": successor.jti}, meta=meta)
            else:
                reused = self._detect_reuse(session, claims, family, now, meta)
        if reused:
            # Access tokens of the family die now, not at their exp (best effort: the family is already
            # revoked in Postgres, which is what the check falls back to when Redis is down).
            self.guard.revoke(families=(str(family),), strict=False)
            if self.sessions_ended is not None:
                self.sessions_ended(claims.user_id, (str(family),), None)
        if rotated is None:
            raise AuthenticationError(INVALID_TOKEN)
        return rotated.public(self.tokens)

    def _detect_reuse(self, session: Session, claims: Claims, family: uuid.UUID, now: datetime,
                      meta: RequestMeta) -> bool:
        row = session.get(RefreshToken, claims.jti)
        if row is None or row.used_at is None or row.user_id != claims.user_id:
            return False  # revoked or unknown: refused, but nobody replayed a retired token
        revoked = store.revoke_family(session, family, now)
        audit.record(session, user_id=claims.user_id, event_type="auth.refresh_reuse_detected", action="revoke",
                     resource_type="user", resource_id=claims.user_id,
                     details={"family": str(family), "revoked_tokens": revoked}, meta=meta)
        return True

    def logout(self, claims: Claims, refresh_token: str | None, meta: RequestMeta) -> None:
        """Revoke the session's family (and the given refresh token's) and denylist this access token.

        Redis is written first: if it cannot record the denylist, nothing changes and the caller gets 503
        (retryable), instead of a logout that quietly leaves the access token alive.
        """
        families = {f for f in (store.parse_family(claims.family),) if f is not None}
        if refresh_token is not None:
            other = self.tokens.verify(refresh_token, REFRESH)
            other_family = store.parse_family(other.family)
            if other.user_id != claims.user_id or other_family is None:
                raise AuthenticationError(INVALID_TOKEN)
            families.add(other_family)
        self.guard.revoke(jti=claims.jti, expires_at=claims.expires_at,
                          families=tuple(str(f) for f in sorted(families)))
        now = utcnow()
        with self.db.transaction() as session:
            for f in sorted(families):  # one order everywhere: two logouts cannot deadlock
                store.lock_family(session, f)
            revoked = sum(store.revoke_family(session, f, now, user_id=claims.user_id) for f in families)
            audit.record(session, user_id=claims.user_id, event_type="auth.logout", action="logout",
                         resource_type="user", resource_id=claims.user_id,
                         details={"families": sorted(str(f) for f in families), "revoked_tokens": revoked},
                         meta=meta)
        if self.sessions_ended is not None:
            self.sessions_ended(claims.user_id, tuple(str(f) for f in sorted(families)), None)
