"""provider_usage becomes the intelligence gateway's accounting: model, token split, latency, attempts, cache hits

Revision ID: 0010_provider_usage_accounting
Revises: 0009_workflows
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa

revision = "0010_provider_usage_accounting"
down_revision = "0009_workflows"
branch_labels = None
depends_on = None

COLUMNS = ("model", "input_tokens", "output_tokens", "total_tokens", "latency_ms", "attempts", "cached")


def upgrade() -> None:
    # Server defaults: existing rows (operator-endpoint calls, all charged) read as uncached calls of one attempt.
    with op.batch_alter_table("provider_usage", schema=None) as batch_op:
        batch_op.add_column(sa.Column("model", sa.String(length=200), server_default="", nullable=False))
        batch_op.add_column(sa.Column("input_tokens", sa.Integer(), server_default=sa.text("0"), nullable=False))
        batch_op.add_column(sa.Column("output_tokens", sa.Integer(), server_default=sa.text("0"), nullable=False))
        batch_op.add_column(sa.Column("total_tokens", sa.Integer(), server_default=sa.text("0"), nullable=False))
        batch_op.add_column(sa.Column("latency_ms", sa.Float(), server_default=sa.text("0"), nullable=False))
        batch_op.add_column(sa.Column("attempts", sa.Integer(), server_default=sa.text("1"), nullable=False))
        batch_op.add_column(sa.Column("cached", sa.Boolean(), server_default=sa.text("false"), nullable=False))
    op.execute("UPDATE provider_usage SET total_tokens = tokens")


def downgrade() -> None:
    with op.batch_alter_table("provider_usage", schema=None) as batch_op:
        for name in reversed(COLUMNS):
            batch_op.drop_column(name)
