from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import Field

from chalicelib.schemas.common import TEXT_CHARS, PublicModel, StrictModel


class MessageListQuery(StrictModel):
    #: true: only messages not marked read yet.
    unread: bool = False
    limit: int | None = Field(default=None, ge=1)
    cursor: Annotated[str, TEXT_CHARS] | None = None


class MessagePublic(PublicModel):
    id: uuid.UUID
    sender_agent_id: uuid.UUID | None
    recipient_agent_id: uuid.UUID | None
    #: the communication task that sent it.
    task_id: uuid.UUID | None
    body: dict[str, Any]
    #: delivered | read (an inbox never shows undeliverable messages: they are reported to the sender)
    status: str
    created_at: datetime
    read_at: datetime | None
