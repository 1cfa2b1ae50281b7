"""The event ledger (chalicelib/events; docs/events.md): one row per status change a user cares about.

Rows are written by Postgres triggers in the transaction that made the change (chalicelib/events/triggers.py),
never by application code, except the few events no table change stands for (`chalicelib.events.ledger.append`).
`event_id` is monotonic and gap-free per user: `event_counters.last_event_id` is bumped in the same statement
that numbers the events, so a rolled-back change leaves neither an event nor a used number behind.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, PrimaryKeyConstraint, String, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from chalicelib.db.models import Base
from chalicelib.db.types import JSONType, UTCDateTime, utcnow


class Event(Base):
    __tablename__ = "events"

    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(BigInteger)
    #: task.status_changed | run.status_changed | run.step_changed | run.approval_requested | webhook.disabled
    type: Mapped[str] = mapped_column(String(40), nullable=False)
    #: task | run | step (a step's resource_id is its run's id; step_id names it)
    resource_type: Mapped[str] = mapped_column(String(16), nullable=False)
    resource_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    run_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    step_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(24), nullable=False)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    #: small: agent_type, agent_id, title for tasks; workflow_id for runs and steps; error_code if any.
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)

    __table_args__ = (PrimaryKeyConstraint("user_id", "event_id", name="pk_events"),
                      # the retention purge deletes by age across users.
                      Index("ix_events_occurred_at", "occurred_at"))


class EventCounter(Base):
    """Per user: the last event id handed out, and how far the notifier has delivered (its CAS cursor)."""

    __tablename__ = "event_counters"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    last_event_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    delivered_event_id: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0, server_default=text("0"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)

    # The notifier's sweep (ledger.pending_users) reads only the users with undelivered events, oldest first.
    __table_args__ = (Index("ix_event_counters_pending_updated_at", "updated_at",
                            postgresql_where=text("last_event_id > delivered_event_id"),
                            sqlite_where=text("last_event_id > delivered_event_id")),)
