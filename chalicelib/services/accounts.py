"""User accounts: read, list, update, change password.

Who may do what comes from the RBAC table (chalicelib.domain.rbac). A user
who may not read another user's account gets 404 for it, as for any other
resource they do not own. Changes that affect sessions (deactivation, role,
password) go through the SessionGuard so they take effect on the very next
request, in every container.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from chalicelib.auth.guard import SessionGuard, SessionsEnded, UserState
from chalicelib.auth.passwords import PasswordHasher
from chalicelib.auth.tokens import Claims, TokenService
from chalicelib.db.models import User
from chalicelib.db.session import Database
from chalicelib.db.types import utcnow
from chalicelib.domain import rbac
from chalicelib.domain.rbac import Permission
from chalicelib.errors import AuthorizationError, ConflictError, NotFoundError, ValidationError
from chalicelib.schemas.users import PasswordChange, TokenPair
from chalicelib.services import audit
from chalicelib.services import refresh_tokens as store
from chalicelib.services.login_throttle import LoginThrottle
from chalicelib.services.meta import RequestMeta
from chalicelib.services.pagination import after_cursor, encode_cursor

#: fields whose change must reach every container's per-request check before the next request.
SESSION_FIELDS = frozenset({"is_active", "role"})


def _not_found(user_id: uuid.UUID) -> NotFoundError:
    return NotFoundError("user not found", {"user_id": str(user_id)})


def _require_access(actor: Claims, user_id: uuid.UUID, permission: Permission) -> None:
    """Self is always allowed. Others: 404 unless the role may read them, then 403 without `permission`."""
    if actor.user_id == user_id:
        return
    if not rbac.has_permission(actor.role, Permission.USERS_READ_ANY):
        raise _not_found(user_id)
    rbac.require(actor.role, permission)


class AccountService:
    def __init__(self, db: Database, hasher: PasswordHasher, tokens: TokenService, guard: SessionGuard,
                 throttle: LoginThrottle | None = None, sessions_ended: SessionsEnded | None = None) -> None:
        self.db = db
        self.hasher = hasher
        self.tokens = tokens
        self.guard = guard
        self.throttle = throttle
        #: told when a deactivation or password change ends every session (closes its WebSocket connections).
        self.sessions_ended = sessions_ended

    def get(self, actor: Claims, user_id: uuid.UUID) -> User:
        _require_access(actor, user_id, Permission.USERS_READ_ANY)
        with self.db.read() as session:
            user = session.get(User, user_id)
        if user is None:
            raise _not_found(user_id)
        return user

    def list(self, actor: Claims, limit: int, cursor: str | None) -> tuple[list[User], str | None]:
        rbac.require(actor.role, Permission.USERS_LIST)
        stmt = select(User)
        if cursor:
            stmt = stmt.where(after_cursor(User.created_at, User.id, cursor))
        stmt = stmt.order_by(User.created_at.desc(), User.id.desc()).limit(limit + 1)
        with self.db.read() as session:
            rows = list(session.scalars(stmt))
        next_cursor = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None
        return rows[:limit], next_cursor

    def update(self, actor: Claims, user_id: uuid.UUID, changes: dict[str, Any], meta: RequestMeta) -> User:
        """`changes` come from the schema the endpoint chose for the actor (UserSelfUpdate / UserAdminUpdate)."""
        _require_access(actor, user_id, Permission.USERS_UPDATE_ANY)
        self._check_changes(actor, user_id, changes)
        session_changes = {k: changes[k] for k in sorted(SESSION_FIELDS & changes.keys())}
        parked = False
        try:
            with self.db.transaction() as session:
                user = session.get(User, user_id, with_for_update=True)
                if user is None:
                    raise _not_found(user_id)
                if session_changes:
                    self.guard.begin_change(user_id)
                    parked = True
                event = self._apply(session, user, changes)
                session.flush()
                audit.record(session, user_id=actor.user_id, event_type=event, action="update",
                             resource_type="user", resource_id=user.id,
                             details={"fields": sorted(changes), **{k: str(v) for k, v in session_changes.items()}},
                             meta=meta)
        except IntegrityError as exc:
            self._abandon(parked, user_id)
            raise ConflictError("that email address is already registered", {"field": "email"}) from exc
        except Exception:
            self._abandon(parked, user_id)
            raise
        if parked:
            self.guard.publish(user_id, UserState.of(user))
        if event == "user.deactivated" and self.sessions_ended is not None:
            self.sessions_ended(user_id, (), user.token_version)
        return user

    @staticmethod
    def _check_changes(actor: Claims, user_id: uuid.UUID, changes: dict[str, Any]) -> None:
        if not changes:
            raise ValidationError("the update body sets no field", {"fields": ["email", "is_active", "role"]})
        null_fields = sorted(k for k, v in changes.items() if v is None)
        if null_fields:
            raise ValidationError("fields cannot be set to null", {"fields": null_fields})
        self_edit = actor.user_id == user_id
        if not self_edit and "email" in changes:
            raise ValidationError("only the account's owner can change its email", {"fields": ["email"]})
        if self_edit and SESSION_FIELDS & changes.keys():
            # An admin demoting or deactivating themself could leave nobody able to administer.
            raise ConflictError("you cannot change your own role or active state",
                                {"fields": sorted(SESSION_FIELDS & changes.keys())})

    @staticmethod
    def _apply(session: Session, user: User, changes: dict[str, Any]) -> str:
        event = "user.updated"
        if "email" in changes:
            user.email = changes["email"]
        if "role" in changes:
            user.role = str(changes["role"])
        if "is_active" in changes and changes["is_active"] != user.is_active:
            user.is_active = changes["is_active"]
            if not user.is_active:
                # Old tokens must not come back to life if the account is reactivated later.
                user.token_version += 1
                store.revoke_user(session, user.id, utcnow())
                event = "user.deactivated"
            else:
                event = "user.reactivated"
        user.updated_at = utcnow()
        return event

    def _abandon(self, parked: bool, user_id: uuid.UUID) -> None:
        if parked:
            self.guard.publish(user_id, None)  # rolled back, nothing changed: drop our tombstone

    def change_password(self, actor: Claims, user_id: uuid.UUID, req: PasswordChange,
                        meta: RequestMeta) -> TokenPair:
        """Every session of the user ends (families revoked, token version bumped); the caller gets a new one."""
        if actor.user_id != user_id:
            if rbac.has_permission(actor.role, Permission.USERS_READ_ANY):
                raise AuthorizationError("only the account's owner can change its password")
            raise _not_found(user_id)
        with self.db.read() as session:
            user = session.get(User, user_id)
        if user is None:
            raise _not_found(user_id)
        # The current password is a guess like a sign-in: same budgets (a stolen access token must not
        # become an unthrottled password oracle).
        attempt = self.throttle.begin(str(user_id), meta.client_ip) if self.throttle is not None else None
        # bcrypt (twice) outside any transaction: no row lock is held for ~0.4 s.
        ok = self.hasher.verify(req.current_password, user.password_hash)
        if not ok:
            if attempt is not None:
                attempt.failed()
            with self.db.transaction() as session:
                audit.record(session, user_id=user_id, event_type="user.password_change_failed", action="update",
                             resource_type="user", resource_id=user_id, meta=meta)
            raise ValidationError("current password is incorrect", {"fields": ["current_password"]})
        if req.new_password == req.current_password:
            raise ValidationError("the new password must differ from the current one", {"fields": ["new_password"]})
        if attempt is not None:
            attempt.succeeded()
        new_hash = self.hasher.hash(req.new_password)
        parked = False
        try:
            with self.db.transaction() as session:
                locked = session.get(User, user_id, with_for_update=True)
                if locked is None or locked.password_hash != user.password_hash:
                    raise ConflictError("the password was changed concurrently; try again")
                self.guard.begin_change(user_id)
                parked = True
                locked.password_hash = new_hash
                locked.token_version += 1
                locked.updated_at = utcnow()
                revoked = store.revoke_user(session, user_id, utcnow())
                family = uuid.uuid4()
                pair = store.mint_pair(self.tokens, locked, family)
                store.record(session, pair, family)
                audit.record(session, user_id=user_id, event_type="user.password_changed", action="update",
                             resource_type="user", resource_id=user_id,
                             details={"revoked_tokens": revoked, "family": str(family)}, meta=meta)
        except Exception:
            self._abandon(parked, user_id)
            raise
        self.guard.publish(user_id, UserState.of(locked))
        if self.sessions_ended is not None:
            self.sessions_ended(user_id, (), locked.token_version)
        return pair.public(self.tokens)
