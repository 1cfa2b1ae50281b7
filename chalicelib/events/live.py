"""Live event fan-out over Redis pub/sub: the notifier publishes each delivered event to its user's channel
`<prefix>events:<user_id>`; long-polls (GET /tasks/{id}?wait=, GET /runs/{id}?wait=) subscribe to it.

Pub/sub is fire-and-forget: a subscriber that is not listening misses the message, so a waiter also
re-reads the ledger on a timer (LEDGER's long-poll) — this channel only makes the common case fast.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chalicelib.events.ledger import Event


def channel(prefix: str, user_id: uuid.UUID | str) -> str:
    return f"{prefix}events:{user_id}"


def publish(redis: Any, prefix: str, event: Event) -> int:
    """Publish one event's wire JSON (Event.to_json) on its user's channel; returns subscribers reached."""
    body = json.dumps(event.to_json(), separators=(",", ":"), default=str)
    return int(redis.publish(channel(prefix, event.user_id), body))
