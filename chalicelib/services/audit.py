"""Audit trail: one row per mutating call and per auth event, in the caller's transaction,
and the query side (GET /audit-logs): admins read every row, a user reads their own."""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from chalicelib.db.models import AuditLog
from chalicelib.db.session import Database
from chalicelib.domain import rbac
from chalicelib.domain.rbac import Permission
from chalicelib.errors import NotFoundError, ValidationError
from chalicelib.schemas.audit import AuditLogQuery
from chalicelib.services.meta import RequestMeta
from chalicelib.services.pagination import after_cursor, encode_cursor

if TYPE_CHECKING:
    from chalicelib.auth.tokens import Claims

REDACTED = "[redacted]"
#: a details key naming one of these (or ending with one) never has its value stored.
_SECRET_KEY_SUFFIXES = ("password", "passwd", "token", "secret", "authorization", "cookie", "hash", "api_key",
                        "apikey", "private_key")
#: a compact JWS anywhere in a string value (access and refresh tokens all look like this).
_JWT = re.compile(r"eyJ[\w-]*\.[\w-]+\.[\w-]*")


def _is_secret_key(key: str) -> bool:
    return key.lower().replace("-", "_").endswith(_SECRET_KEY_SUFFIXES)


def scrub(value: Any) -> Any:
    """Details as stored: values under secret-looking keys and token-shaped strings are redacted.

    Defence in depth: callers pass no secrets, and this keeps a future mistake out of a table
    that admins read and that lives for years.
    """
    if isinstance(value, dict):
        return {k: REDACTED if _is_secret_key(str(k)) else scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return _JWT.sub(REDACTED, value)
    return value


def record(session: Session, *, user_id: uuid.UUID | None, event_type: str, action: str,
           resource_type: str | None = None, resource_id: uuid.UUID | str | None = None,
           details: dict[str, Any] | None = None, meta: RequestMeta | None = None) -> None:
    session.add(AuditLog(**row(user_id=user_id, event_type=event_type, action=action, resource_type=resource_type,
                               resource_id=resource_id, details=details, meta=meta)))


def row(*, user_id: uuid.UUID | None, event_type: str, action: str, resource_type: str | None = None,
        resource_id: uuid.UUID | str | None = None, details: dict[str, Any] | None = None,
        meta: RequestMeta | None = None) -> dict[str, Any]:
    """An audit row's column values (details scrubbed), for `record` or a Core INSERT (the task create path)."""
    meta = meta or RequestMeta()
    return {"user_id": user_id, "event_type": event_type, "action": action, "resource_type": resource_type,
            "resource_id": str(resource_id) if resource_id is not None else None, "details": scrub(details or {}),
            "client_ip": meta.client_ip, "request_id": meta.request_id}


class AuditLogService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def list(self, actor: Claims, query: AuditLogQuery, limit: int) -> tuple[list[AuditLog], str | None]:
        """Newest first, keyset-paginated; one statement per page.

        A user who may not read everyone's rows is scoped to their own; asking for another
        user's rows is 404 (as for any resource they do not own), whether that user exists or not.
        """
        owner = query.user_id
        if not rbac.has_permission(actor.role, Permission.AUDIT_READ_ANY):
            rbac.require(actor.role, Permission.AUDIT_READ_OWN)
            if owner is not None and owner != actor.user_id:
                raise NotFoundError("user not found", {"user_id": str(owner)})
            owner = actor.user_id
        stmt = select(AuditLog)
        if owner is not None:
            stmt = stmt.where(AuditLog.user_id == owner)
        if query.event_type is not None:
            stmt = stmt.where(AuditLog.event_type == query.event_type)
        if query.resource_type is not None:
            stmt = stmt.where(AuditLog.resource_type == query.resource_type)
        if query.resource_id is not None:
            stmt = stmt.where(AuditLog.resource_id == query.resource_id)
        for field, bound in (("after", query.after), ("before", query.before)):
            if bound is None:
                continue
            if bound.tzinfo is None:
                raise ValidationError(f"{field} must include a timezone (e.g. 2026-01-01T00:00:00Z)",
                                      {"field": field})
            stmt = stmt.where(AuditLog.timestamp >= bound if field == "after" else AuditLog.timestamp < bound)
        if query.cursor:
            stmt = stmt.where(after_cursor(AuditLog.timestamp, AuditLog.id, query.cursor))
        stmt = stmt.order_by(AuditLog.timestamp.desc(), AuditLog.id.desc()).limit(limit + 1)
        with self.db.read() as session:
            rows = list(session.scalars(stmt))
        last = rows[limit - 1] if len(rows) > limit else None
        return rows[:limit], encode_cursor(last.timestamp, last.id) if last is not None else None
