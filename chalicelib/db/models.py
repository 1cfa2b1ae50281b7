"""ORM models: the seed's schema plus what the serverless design needs (outbox).

Every constraint and index is named so migrations stay stable across
Postgres and SQLite. Alembic migrations in `migrations/` are the source of
the live schema; `tests/integration/test_migrations.py` checks they match.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from chalicelib.db.types import JSONType, UTCDateTime, utcnow

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(Uuid, primary_key=True, default=uuid.uuid4)


def _created() -> Mapped[datetime]:
    return mapped_column(UTCDateTime, nullable=False, default=utcnow)


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = _uuid_pk()
    username: Mapped[str] = mapped_column(String(64), nullable=False)
    email: Mapped[str] = mapped_column(String(254), nullable=False)
    password_hash: Mapped[str] = mapped_column(String(128), nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False, default="user", server_default="user")
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True, server_default=text("true"))
    #: bumped on password change and deactivation; access tokens carry it (`ver`), older ones stop working.
    token_version: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default=text("0"))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)

    __table_args__ = (
        UniqueConstraint("username", name="uq_users_username"),
        UniqueConstraint("email", name="uq_users_email"),
        Index("ix_users_created_at_id", "created_at", "id"),
    )


class RefreshToken(Base):
    """One issued refresh token. A login starts a family; each refresh retires one row and adds the next.

    Presenting a retired token (used_at set) revokes the whole family: someone replayed a stolen token.
    """

    __tablename__ = "refresh_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    family_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    replaced_by: Mapped[str | None] = mapped_column(String(64), nullable=True)

    __table_args__ = (
        Index("ix_refresh_tokens_family_id", "family_id"),
        Index("ix_refresh_tokens_user_id_revoked_at", "user_id", "revoked_at"),
    )


class Agent(Base):
    __tablename__ = "agents"

    id: Mapped[uuid.UUID] = _uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    type: Mapped[str] = mapped_column(String(32), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="active")
    capabilities: Mapped[list[Any]] = mapped_column(JSONType, nullable=False, default=list)
    # `metadata` is reserved on declarative classes; the column keeps the seed's name.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, nullable=False, default=dict)
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)
    last_heartbeat: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # managed: runs in the per-type Lambda consumer; external: a worker the user runs, leasing tasks.
    mode: Mapped[str] = mapped_column(String(16), nullable=False, default="managed", server_default="managed")
    #: sha256 of an external agent's API key (the key itself is shown once, at creation).
    api_key_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: how many tasks it may hold at once (routing and leasing respect it).
    max_concurrency: Mapped[int] = mapped_column(Integer, nullable=False, default=10, server_default=text("10"))
    #: Beta(alpha, beta) posterior of result quality, maintained by the learning agent; routing reads it.
    quality_alpha: Mapped[float] = mapped_column(Float, nullable=False, default=1.0, server_default=text("1.0"))
    quality_beta: Mapped[float] = mapped_column(Float, nullable=False, default=1.0, server_default=text("1.0"))
    quality_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    @property
    def quality(self) -> dict[str, Any]:
        """The posterior as the API shows it (AgentPublic.quality); before the first flush, the prior."""
        alpha = 1.0 if self.quality_alpha is None else self.quality_alpha
        beta = 1.0 if self.quality_beta is None else self.quality_beta
        return {"mean": alpha / (alpha + beta), "alpha": alpha, "beta": beta, "updated_at": self.quality_updated_at}

    __table_args__ = (
        Index("ix_agents_user_id_created_at", "user_id", "created_at"),
        Index("ix_agents_type_status", "type", "status"),
        Index("ix_agents_user_id_type", "user_id", "type"),
    )


class Task(Base):
    __tablename__ = "tasks"

    id: Mapped[uuid.UUID] = _uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    agent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), nullable=False)
    agent_type: Mapped[str] = mapped_column(String(32), nullable=False)
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    priority: Mapped[str] = mapped_column(String(16), nullable=False, default="normal")
    input_data: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default=text("0"))
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: set for subtasks an orchestrator fanned out.
    parent_task_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("tasks.id", ondelete="CASCADE"), nullable=True
    )
    #: external agents: the task returns to the queue when this passes without a heartbeat.
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: a workflow step's task (chalicelib.workflows): its run, step, for_each item, and the Step Functions task
    #: token its outcome is reported to (SendTaskSuccess/Failure) once it is terminal.
    run_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("workflow_runs.id", ondelete="CASCADE", use_alter=True), nullable=True
    )
    step_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    item_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    callback_token: Mapped[str | None] = mapped_column(Text, nullable=True)

    result: Mapped[TaskResult | None] = relationship(back_populates="task", uselist=False, lazy="raise")

    __table_args__ = (
        # Keyset pagination (newest first) and every list filter lead with user_id.
        Index("ix_tasks_user_id_created_at_id", "user_id", "created_at", "id"),
        Index("ix_tasks_user_id_status_created_at", "user_id", "status", "created_at"),
        Index("ix_tasks_user_id_agent_id_created_at", "user_id", "agent_id", "created_at"),
        Index("ix_tasks_user_id_priority_created_at", "user_id", "priority", "created_at"),
        Index("ix_tasks_agent_id_status", "agent_id", "status"),
        Index("ix_tasks_parent_task_id", "parent_task_id"),
        Index("ix_tasks_status_lease_expires_at", "status", "lease_expires_at"),
        Index("ix_tasks_run_id_step_id_item_index", "run_id", "step_id", "item_index"),
        # The lane of a new managed task counts its owner's active tasks of the type (chalicelib/services/lanes.py).
        Index("ix_tasks_active_user_id_agent_type_priority", "user_id", "agent_type", "priority",
              postgresql_where=text("status IN ('pending', 'queued', 'processing')"),
              sqlite_where=text("status IN ('pending', 'queued', 'processing')")),
    )


class TaskResult(Base):
    __tablename__ = "task_results"

    id: Mapped[uuid.UUID] = _uuid_pk()
    task_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False)
    output_data: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    created_at: Mapped[datetime] = _created()

    task: Mapped[Task] = relationship(back_populates="result", lazy="raise")

    # One result per task: the last line of defence against duplicate deliveries.
    __table_args__ = (UniqueConstraint("task_id", name="uq_task_results_task_id"),)


class AuditLog(Base):
    __tablename__ = "audit_logs"

    id: Mapped[uuid.UUID] = _uuid_pk()
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    event_type: Mapped[str] = mapped_column(String(64), nullable=False)
    resource_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    resource_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    action: Mapped[str] = mapped_column(String(32), nullable=False)
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    client_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)

    __table_args__ = (
        Index("ix_audit_logs_user_id_timestamp", "user_id", "timestamp"),
        Index("ix_audit_logs_event_type_timestamp", "event_type", "timestamp"),
        # An admin's unfiltered page (newest first) and the resource filters of GET /audit-logs.
        Index("ix_audit_logs_timestamp_id", "timestamp", "id"),
        Index("ix_audit_logs_resource_type_resource_id_timestamp", "resource_type", "resource_id", "timestamp"),
    )


class TaskFeedback(Base):
    """A user's rating of a task's result; the learning agent folds it into the agent's quality."""

    __tablename__ = "task_feedback"

    id: Mapped[uuid.UUID] = _uuid_pk()
    task_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False)
    agent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), nullable=False)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    rating: Mapped[int] = mapped_column(Integer, nullable=False)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = _created()
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        UniqueConstraint("task_id", "user_id", name="uq_task_feedback_task_id_user_id"),
        Index("ix_task_feedback_agent_id_created_at", "agent_id", "created_at"),
    )


class AgentMessage(Base):
    """A message from one agent to another (communication agent); the recipient's inbox."""

    __tablename__ = "agent_messages"

    id: Mapped[uuid.UUID] = _uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    sender_agent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("agents.id", ondelete="SET NULL"), nullable=True
    )
    recipient_agent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), nullable=True
    )
    task_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tasks.id", ondelete="SET NULL"), nullable=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    #: delivered | undeliverable | read
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="delivered")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = _created()
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        Index("ix_agent_messages_recipient_agent_id_created_at", "recipient_agent_id", "created_at"),
        Index("ix_agent_messages_task_id", "task_id"),
    )


class OutboxMessage(Base):
    """A message to publish, written in the same transaction as the change it announces."""

    __tablename__ = "outbox"

    id: Mapped[uuid.UUID] = _uuid_pk()
    aggregate_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    destination: Mapped[str] = mapped_column(String(64), nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    created_at: Mapped[datetime] = _created()
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: not retried before this (exponential backoff with jitter after a failed publish); NULL = due now.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: set once `attempts` reached the cap: the relay stops trying and the operators were alerted.
    parked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (Index("ix_outbox_published_at_created_at", "published_at", "created_at"),
                      Index("ix_outbox_published_at_attempts_created_at", "published_at", "attempts", "created_at"))


class IdempotencyKey(Base):
    """A client's `Idempotency-Key` for one create call: the request's hash and the response it got.

    The unique (user_id, key) constraint is what makes concurrent requests with one key create one
    resource: the second insert waits for the first transaction and then finds its row.
    """

    __tablename__ = "idempotency_keys"

    id: Mapped[uuid.UUID] = _uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    key: Mapped[str] = mapped_column(String(255), nullable=False)
    #: the operation it was used for ("POST /tasks"); the same key on another operation is a conflict.
    scope: Mapped[str] = mapped_column(String(128), nullable=False)
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    resource_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = _created()
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (UniqueConstraint("user_id", "key", name="uq_idempotency_keys_user_id_key"),
                      Index("ix_idempotency_keys_expires_at", "expires_at"))


class ProviderKey(Base):
    """A user's own API key for an endpoint they bring, AES-GCM encrypted (chalicelib.providers.user_keys)."""

    __tablename__ = "provider_keys"

    id: Mapped[uuid.UUID] = _uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    #: version byte + 12-byte nonce + ciphertext and tag; the user id and name are its associated data.
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)

    __table_args__ = (UniqueConstraint("user_id", "name", name="uq_provider_keys_user_id_name"),)


class ProviderUsage(Base):
    """One model call of a user's agent, through the intelligence gateway (chalicelib.engines.intelligence).

    `tokens` is what the call charged against the daily budget (operator endpoints; 0 for the user's own endpoint
    and for answers served from the prompt cache) — the budget sums it; the other columns are the accounting.
    """

    __tablename__ = "provider_usage"

    id: Mapped[uuid.UUID] = _uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    task_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    #: the catalog alias, or "own" for the user's own endpoint.
    endpoint: Mapped[str] = mapped_column(String(64), nullable=False)
    tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = _created()
    model: Mapped[str] = mapped_column(String(200), nullable=False, default="", server_default="")
    input_tokens: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default=text("0"))
    output_tokens: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default=text("0"))
    total_tokens: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default=text("0"))
    latency_ms: Mapped[float] = mapped_column(Float, nullable=False, default=0.0, server_default=text("0"))
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=1, server_default=text("1"))
    #: served from the prompt cache: no provider call was made.
    cached: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=text("false"))

    # The budget check is one index-only range scan: (user_id, created_at) carrying tokens.
    __table_args__ = (Index("ix_provider_usage_user_id_created_at", "user_id", "created_at",
                            postgresql_include=["tokens"]),)


class ProducerKey(Base):
    """An event producer's signing key (docs/producers.md): the secret AES-GCM encrypted, because verifying an
    HMAC needs the secret itself. Revoked keys stay (audit rows name them) with `revoked_at` set."""

    __tablename__ = "producer_keys"

    id: Mapped[uuid.UUID] = _uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    #: version byte + nonce + ciphertext and tag; (owner, "producer:<key id>") is its associated data.
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_at: Mapped[datetime] = _created()
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (Index("ix_producer_keys_user_id", "user_id"),)


class IngressReceipt(Base):
    """One row per (owner, idempotency_key) an ingress message created a task for: the unique constraint makes
    concurrent duplicates create one task (the loser's transaction, task included, rolls back)."""

    __tablename__ = "ingress_receipts"

    id: Mapped[uuid.UUID] = _uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    idempotency_key: Mapped[str] = mapped_column(String(128), nullable=False)
    task_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False)
    key_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    correlation_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = _created()

    __table_args__ = (UniqueConstraint("user_id", "idempotency_key",
                                       name="uq_ingress_receipts_user_id_idempotency_key"),)


# Tables in modules of their own, registered on the same metadata: the event ledger (chalicelib.events; its
# rows are written by triggers, chalicelib/events/triggers.py), the analytics rollups (chalicelib.engines.rollups),
# webhook subscriptions, deliveries and attempts (chalicelib.webhooks) and the workflow engine's tables.
from chalicelib.db import event_models as event_models  # noqa: E402
from chalicelib.db import rollup_models as rollup_models  # noqa: E402
from chalicelib.db import webhook_models as webhook_models  # noqa: E402
from chalicelib.db import workflow_models as workflow_models  # noqa: E402
