"""Reading and writing the event ledger (docs/events.md).

Status changes are written by the triggers (chalicelib/events/triggers.py) in the transaction that made them;
`append` is for the few events no table change stands for (webhook.disabled). Every read is owner-filtered:
events belong to one user and are numbered per user, so a cursor (`after`) only means something for its owner.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Uuid, bindparam, delete, func, select, text, tuple_, update
from sqlalchemy.orm import Session

from chalicelib.db.event_models import Event as EventRow
from chalicelib.db.event_models import EventCounter
from chalicelib.db.types import UTCDateTime, utcnow
from chalicelib.events.triggers import NOTIFY_CHANNEL
from chalicelib.events.types import (
    EVENT_TYPES,
    RUN_APPROVAL_REQUESTED,
    RUN_STATUS_CHANGED,
    RUN_STEP_CHANGED,
    TASK_STATUS_CHANGED,
    WEBHOOK_DISABLED,
)

__all__ = ["EVENT_TYPES", "NOTIFY_CHANNEL", "RUN_APPROVAL_REQUESTED", "RUN_STATUS_CHANGED", "RUN_STEP_CHANGED",
           "TASK_STATUS_CHANGED", "WEBHOOK_DISABLED", "Event", "advance", "append", "list_after", "pending_users",
           "purge"]


@dataclass(frozen=True)
class Event:
    user_id: uuid.UUID
    event_id: int
    type: str
    resource_type: str
    resource_id: uuid.UUID
    run_id: uuid.UUID | None
    step_id: str | None
    status: str
    occurred_at: datetime
    payload: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: EventRow) -> Event:
        return cls(user_id=row.user_id, event_id=row.event_id, type=row.type, resource_type=row.resource_type,
                   resource_id=row.resource_id, run_id=row.run_id, step_id=row.step_id, status=row.status,
                   occurred_at=row.occurred_at, payload=dict(row.payload or {}))

    def to_json(self) -> dict[str, Any]:
        """The wire shape (GET /events, WebSocket messages, webhook bodies, the Redis long-poll channel).

        No user_id: every channel is already one user's."""
        return {"event_id": self.event_id, "type": self.type,
                "resource": {"type": self.resource_type, "id": str(self.resource_id)},
                "run_id": str(self.run_id) if self.run_id is not None else None, "step_id": self.step_id,
                "status": self.status, "occurred_at": self.occurred_at.isoformat().replace("+00:00", "Z"),
                "payload": self.payload}


def list_after(session: Session, user_id: uuid.UUID, after: int, limit: int) -> list[Event]:
    """The user's events with ids above `after`, oldest first (one index range scan on the primary key)."""
    rows = session.scalars(select(EventRow).where(EventRow.user_id == user_id, EventRow.event_id > after)
                           .order_by(EventRow.event_id).limit(limit))
    return [Event.from_row(r) for r in rows]


def append(session: Session, user_id: uuid.UUID, type: str, resource_type: str, resource_id: uuid.UUID,
           status: str, payload: dict[str, Any] | None = None, *, run_id: uuid.UUID | None = None,
           step_id: str | None = None) -> Event:
    """Write one event in the caller's transaction, numbered like the triggers number theirs.

    The counter row stays locked until the caller commits (ids commit in order); keep the transaction short."""
    now = utcnow()
    next_id = session.execute(_BUMP, {"user_id": user_id, "now": now}).scalar_one()
    row = EventRow(user_id=user_id, event_id=next_id, type=type, resource_type=resource_type,
                   resource_id=resource_id, run_id=run_id, step_id=step_id, status=status, occurred_at=now,
                   payload=payload or {})
    session.add(row)
    session.flush()
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_notify(NOTIFY_CHANNEL, str(user_id))))
    return Event.from_row(row)


# Both Postgres and SQLite (>= 3.35) speak INSERT ... ON CONFLICT ... RETURNING.
_BUMP = text("INSERT INTO event_counters AS ec (user_id, last_event_id, delivered_event_id, updated_at) "
             "VALUES (:user_id, 1, 0, :now) ON CONFLICT (user_id) DO UPDATE "
             "SET last_event_id = ec.last_event_id + 1, updated_at = excluded.updated_at "
             "RETURNING last_event_id").bindparams(bindparam("user_id", type_=Uuid),
                                                   bindparam("now", type_=UTCDateTime))


def pending_users(session: Session | Connection, limit: int) -> list[tuple[uuid.UUID, int, int]]:
    """Users with events not yet delivered: (user_id, delivered_event_id, last_event_id), least recently
    touched first (a delivery touches the row too, so the sweep goes round the users)."""
    rows = session.execute(select(EventCounter.user_id, EventCounter.delivered_event_id, EventCounter.last_event_id)
                           .where(EventCounter.last_event_id > EventCounter.delivered_event_id)
                           .order_by(EventCounter.updated_at).limit(limit))
    return [(r.user_id, r.delivered_event_id, r.last_event_id) for r in rows]


def advance(session: Session, user_id: uuid.UUID, from_id: int, to_id: int) -> bool:
    """Move the user's delivery cursor from `from_id` to `to_id` if nobody moved it meanwhile (compare-and-set).

    False means another notifier got there first (its delivery stands; ours was a duplicate, which is allowed:
    delivery is at-least-once). A cursor never passes the last event handed out."""
    moved = session.execute(update(EventCounter)
                            .where(EventCounter.user_id == user_id, EventCounter.delivered_event_id == from_id,
                                   EventCounter.last_event_id >= to_id)
                            .values(delivered_event_id=to_id, updated_at=utcnow())
                            .execution_options(synchronize_session=False))
    return bool(moved.rowcount)  # type: ignore[attr-defined]


def purge(session: Session, older_than: datetime, batch: int | None = None) -> int:
    """Delete events that occurred before `older_than` (every user's); at most `batch` of them when given.
    The counters stay: ids keep counting up, so a client's cursor never sees an id reused."""
    stmt = delete(EventRow).where(EventRow.occurred_at < older_than)
    if batch is not None:
        oldest = (select(EventRow.user_id, EventRow.event_id).where(EventRow.occurred_at < older_than)
                  .order_by(EventRow.occurred_at).limit(batch).subquery())
        stmt = delete(EventRow).where(tuple_(EventRow.user_id, EventRow.event_id)
                                      .in_(select(oldest.c.user_id, oldest.c.event_id)))
    return int(session.execute(stmt.execution_options(synchronize_session=False)).rowcount)  # type: ignore[attr-defined]

