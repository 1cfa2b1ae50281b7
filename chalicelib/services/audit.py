"""Audit trail: one row per mutating call and per auth event, in the caller's transaction."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from chalicelib.db.models import AuditLog
from chalicelib.services.meta import RequestMeta


def record(session: Session, *, user_id: uuid.UUID | None, event_type: str, action: str,
           resource_type: str | None = None, resource_id: uuid.UUID | str | None = None,
           details: dict[str, Any] | None = None, meta: RequestMeta | None = None) -> None:
    meta = meta or RequestMeta()
    session.add(
        AuditLog(
            user_id=user_id,
            event_type=event_type,
            action=action,
            resource_type=resource_type,
            resource_id=str(resource_id) if resource_id is not None else None,
            details=details or {},
            client_ip=meta.client_ip,
            request_id=meta.request_id,
        )
    )
