"""analytics rollups: per-user compaction marks, hour/day task counts and latency histograms

Revision ID: 0011_task_rollups
Revises: 0010_provider_usage_accounting
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa

from chalicelib.db.types import UTCDateTime

revision = "0011_task_rollups"
down_revision = "0010_provider_usage_accounting"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "task_rollup_marks",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("compacted_until", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_task_rollup_marks_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_task_rollup_marks")),
    )
    op.create_table(
        "task_rollups",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("grain", sa.String(length=8), nullable=False),
        sa.Column("period_start", UTCDateTime(), nullable=False),
        sa.Column("agent_type", sa.String(length=32), nullable=False),
        sa.Column("agent_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_task_rollups_user_id_users"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], name=op.f("fk_task_rollups_agent_id_agents"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_rollups")),
    )
    op.create_index("ix_task_rollups_user_id_grain_period_start", "task_rollups", ["user_id", "grain", "period_start"])
    op.create_index("ix_task_rollups_grain_period_start", "task_rollups", ["grain", "period_start"])
    op.create_table(
        "task_latency_histograms",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("grain", sa.String(length=8), nullable=False),
        sa.Column("period_start", UTCDateTime(), nullable=False),
        sa.Column("metric", sa.String(length=8), nullable=False),
        sa.Column("bucket", sa.SmallInteger(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_task_latency_histograms_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_latency_histograms")),
    )
    op.create_index("ix_task_latency_histograms_user_id_grain_period_start", "task_latency_histograms",
                    ["user_id", "grain", "period_start"])
    op.create_index("ix_task_latency_histograms_grain_period_start", "task_latency_histograms",
                    ["grain", "period_start"])


def downgrade() -> None:
    op.drop_table("task_latency_histograms")
    op.drop_table("task_rollups")
    op.drop_table("task_rollup_marks")
