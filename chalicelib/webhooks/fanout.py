"""The notifier's webhook sink: events in, delivery rows out, in the notifier's own transaction.

Only the user's own active subscriptions whose event_types match get a row (every statement filters on the
owner). The notifier delivers at least once, so the same event may arrive twice: the (webhook_id, event_id)
unique constraint makes that one delivery. Sending is the sender's job (chalicelib/webhooks/sender.py); a
pg_notify on commit wakes it at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from chalicelib.db.types import utcnow
from chalicelib.db.webhook_models import Webhook, WebhookDelivery
from chalicelib.webhooks import NOTIFY_CHANNEL, matches

#: rows per INSERT (13 columns each)
INSERT_CHUNK = 1000


class LedgerEvent(Protocol):
    """What the sink reads of chalicelib.events.ledger.Event."""

    @property
    def event_id(self) -> int: ...

    @property
    def type(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...


def insert_ignoring_duplicates(session: Session, rows: list[dict[str, Any]]) -> int:
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    inserted = 0
    for i in range(0, len(rows), INSERT_CHUNK):  # a statement holds at most 65,535 parameters
        stmt = insert(WebhookDelivery).values(rows[i:i + INSERT_CHUNK]).on_conflict_do_nothing(
            index_elements=[WebhookDelivery.webhook_id, WebhookDelivery.event_id])
        result: Any = session.execute(stmt)
        inserted += int(result.rowcount or 0)
    return inserted


def wake_sender(session: Session) -> None:
    """Delivered when the transaction commits (never if it rolls back)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})


class WebhookSink:
    def __init__(self, retry_window_seconds: int, clock: Callable[[], datetime] = utcnow) -> None:
        self.retry_window = timedelta(seconds=retry_window_seconds)
        self.clock = clock

    def deliver(self, session: Session, user_id: uuid.UUID, events: Sequence[LedgerEvent]) -> None:
        if not events:
            return
        hooks = session.execute(select(Webhook.id, Webhook.event_types).where(
            Webhook.user_id == user_id, Webhook.status == "active")).all()
        if not hooks:
            return
        now = self.clock()
        rows = [{"id": uuid.uuid4(), "webhook_id": hook_id, "user_id": user_id, "event_id": event.event_id,
                 "event_type": event.type, "payload": event.to_json(), "status": "pending", "attempts": 0,
                 "next_attempt_at": now, "retry_until": now + self.retry_window, "created_at": now,
                 "updated_at": now}
                for event in events for hook_id, types in hooks if matches(list(types), event.type)]
        if rows and insert_ignoring_duplicates(session, rows):
            wake_sender(session)
