from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from chalicelib.schemas.common import NAME_CHARS, TEXT_CHARS, FilterDatetime, PublicModel, StrictModel


class AuditLogQuery(StrictModel):
    """GET /audit-logs filters. `after` is inclusive, `before` exclusive; both need a timezone."""

    user_id: uuid.UUID | None = None
    event_type: Annotated[str, StringConstraints(min_length=1, max_length=64), NAME_CHARS] | None = None
    resource_type: Annotated[str, StringConstraints(min_length=1, max_length=32), NAME_CHARS] | None = None
    resource_id: Annotated[str, StringConstraints(min_length=1, max_length=64), NAME_CHARS] | None = None
    after: FilterDatetime | None = None
    before: FilterDatetime | None = None
    limit: int | None = Field(default=None, ge=1)
    cursor: Annotated[str, TEXT_CHARS] | None = None


class AuditLogPublic(PublicModel):
    id: uuid.UUID
    user_id: uuid.UUID | None
    event_type: str
    action: str
    resource_type: str | None
    resource_id: str | None
    details: dict[str, Any]
    client_ip: str | None
    request_id: str | None
    timestamp: datetime
