"""Response models of the monitoring endpoints (/status)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel


class QueueDepthPublic(BaseModel):
    agent_type: str
    queue: str
    messages: int | None  # ApproximateNumberOfMessages; None when the queue could not be read
    in_flight: int | None  # ApproximateNumberOfMessagesNotVisible
    dlq: str  # shared by both lanes
    dlq_messages: int | None
    error: str | None = None
    #: the type's bulk lane (docs/scheduling.md); `queue`/`messages`/`in_flight` are its fast lane's
    bulk_queue: str | None = None
    bulk_messages: int | None = None
    bulk_in_flight: int | None = None


class StatusPublic(BaseModel):
    version: str
    stage: str
    #: "platform" for admins (every agent, every queue); "user": the caller's own agents, no queue depths.
    scope: Literal["platform", "user"]
    started_at: datetime  # when this container started
    uptime_seconds: float
    agents: dict[str, int]  # by status (every status present, zeros included), within `scope`
    queues: list[QueueDepthPublic]  # empty for scope "user"
    #: where to open the WebSocket for live events (docs/websocket.md); null when the stage has none.
    websocket_url: str | None = None
