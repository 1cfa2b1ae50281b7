"""event ledger: events, per-user event counters, and the triggers that write them (Postgres)

Revision ID: 0012_event_ledger
Revises: 0011_task_rollups
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa
from chalicelib.db.types import JSONType, UTCDateTime
from chalicelib.events.triggers import create_statements, drop_statements

revision = "0012_event_ledger"
down_revision = "0011_task_rollups"
branch_labels = None
depends_on = None

def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("resource_type", sa.String(length=16), nullable=False),
        sa.Column("resource_id", sa.Uuid(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=True),
        sa.Column("step_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("payload", JSONType, nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_events_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", "event_id", name=op.f("pk_events")),
    )
    op.create_index("ix_events_occurred_at", "events", ["occurred_at"])
    op.create_table(
        "event_counters",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("last_event_id", sa.BigInteger(), nullable=False),
        sa.Column("delivered_event_id", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_event_counters_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_event_counters")),
    )
    # The triggers are Postgres-only (plpgsql, transition tables); SQLite gets the tables and no events.
    if op.get_bind().dialect.name == "postgresql":
        for statement in create_statements():
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in drop_statements():
            op.execute(statement)
    op.drop_table("event_counters")
    op.drop_index("ix_events_occurred_at", table_name="events")
    op.drop_table("events")
