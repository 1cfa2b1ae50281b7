"""Webhook subscriptions, their deliveries and every attempt (chalicelib/webhooks; docs/webhooks.md).

A delivery is one event for one subscription; `webhook_attempts` logs each POST of it (the API shows them all).
The sender claims due deliveries by `(status, next_attempt_at)`; `claimed_until` is its lease, so no transaction
is held while a receiver answers, and a sender that dies leaves the row due again when the lease passes.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from chalicelib.db.models import Base
from chalicelib.db.types import JSONType, UTCDateTime, utcnow


class Webhook(Base):
    __tablename__ = "webhooks"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    url: Mapped[str] = mapped_column(String(2048), nullable=False)
    #: exact event types, or ["*"]
    event_types: Mapped[list[str]] = mapped_column(JSONType, nullable=False)
    description: Mapped[str | None] = mapped_column(String(500), nullable=True)
    #: the signing secret ("whsec_..."), AES-256-GCM like provider keys; (owner, "webhook:<id>") is the AAD.
    secret_ciphertext: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    #: after a rotation, the previous secret also signs deliveries until then (receivers switch without a gap)
    previous_secret_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: active | disabled
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="active", server_default="active")
    #: deliveries in a row that ended failed/abandoned (a success resets it).
    failure_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default=text("0"))
    disabled_reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)

    __table_args__ = (Index("ix_webhooks_user_id_created_at", "user_id", "created_at"),)


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    webhook_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    #: the ledger's event id (per user); null for a `webhook.test` event.
    event_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    event_type: Mapped[str] = mapped_column(String(40), nullable=False)
    #: the body sent, as JSON (the ledger's wire shape of the event)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    #: pending | succeeded | failed (a 4xx: not retried) | abandoned (retry window over, or the webhook disabled)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending", server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default=text("0"))
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: retries stop after this (created_at + the retry window; a redelivery starts a new window)
    retry_until: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    #: a sender holds the row until then (no transaction open while the receiver answers)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_latency_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)

    __table_args__ = (
        # the notifier delivers at least once: the same event handed over twice makes one delivery
        UniqueConstraint("webhook_id", "event_id", name="uq_webhook_deliveries_webhook_id_event_id"),
        # the claim: per user, its oldest due pending rows (and the loose scan over users with pending rows)
        Index("ix_webhook_deliveries_user_id_next_attempt_at", "user_id", "next_attempt_at",
              postgresql_where=text("status = 'pending'"), sqlite_where=text("status = 'pending'")),
        # per user, what is in flight (claimed rows are few: at most the senders' queues)
        Index("ix_webhook_deliveries_user_id_claimed_until", "user_id", "claimed_until",
              postgresql_where=text("claimed_until IS NOT NULL"), sqlite_where=text("claimed_until IS NOT NULL")),
        # the retention purge deletes finished deliveries by age across users
        Index("ix_webhook_deliveries_created_at", "created_at"),
        # the delivery log's keyset pages: (created_at, id) < cursor is a range on this index
        Index("ix_webhook_deliveries_webhook_id_created_at_id", "webhook_id", "created_at", "id"),
    )


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
                                                   nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    latency_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: the start of the receiver's answer (what it said about a failure), bounded
    response_excerpt: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: when the next attempt was scheduled (null: none, the delivery ended)
    next_retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (Index("ix_webhook_attempts_delivery_id", "delivery_id"),)
