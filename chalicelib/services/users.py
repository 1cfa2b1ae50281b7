"""Registration and login."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError

from chalicelib.auth.passwords import PasswordHasher
from chalicelib.auth.tokens import ACCESS, REFRESH, TokenService
from chalicelib.db.models import User
from chalicelib.db.session import Database
from chalicelib.errors import AuthenticationError, ConflictError
from chalicelib.schemas.users import LoginRequest, RegisterRequest, TokenPair
from chalicelib.services import audit
from chalicelib.services.meta import RequestMeta

INVALID_CREDENTIALS = "invalid username or password"


class UserService:
    def __init__(self, db: Database, hasher: PasswordHasher, tokens: TokenService) -> None:
        self.db = db
        self.hasher = hasher
        self.tokens = tokens

    def register(self, req: RegisterRequest, meta: RequestMeta) -> User:
        password_hash = self.hasher.hash(req.password)
        try:
            with self.db.transaction() as session:
                taken = session.scalar(
                    select(User.id).where(or_(User.username == req.username, User.email == req.email)).limit(1)
                )
                if taken is not None:
                    raise ConflictError("username or email is already registered")
                user = User(username=req.username, email=req.email, password_hash=password_hash)
                session.add(user)
                session.flush()
                audit.record(session, user_id=user.id, event_type="auth.register", action="create",
                             resource_type="user", resource_id=user.id, meta=meta)
        except IntegrityError as exc:  # lost a race with a concurrent registration
            raise ConflictError("username or email is already registered") from exc
        return user

    def login(self, req: LoginRequest, meta: RequestMeta) -> TokenPair:
        with self.db.transaction() as session:
            user = session.scalar(
                select(User).where(or_(User.username == req.username, User.email == req.username.lower()))
            )
            ok = self.hasher.verify(req.password, user.password_hash if user else None)
            if not ok or user is None or not user.is_active:
                audit.record(session, user_id=user.id if user else None, event_type="auth.login_failed",
                             action="login", resource_type="user",
                             details={"reason": "inactive" if ok and user else "bad_credentials"}, meta=meta)
                failed = True
            else:
                audit.record(session, user_id=user.id, event_type="auth.login", action="login",
                             resource_type="user", resource_id=user.id, meta=meta)
                failed = False
        if failed or user is None:
            raise AuthenticationError(INVALID_CREDENTIALS)
        return TokenPair(
            access_token=self.tokens.issue(user.id, user.role, ACCESS),
            refresh_token=self.tokens.issue(user.id, user.role, REFRESH),
            expires_in=self.tokens.access_ttl,
            refresh_expires_in=self.tokens.refresh_ttl,
        )
