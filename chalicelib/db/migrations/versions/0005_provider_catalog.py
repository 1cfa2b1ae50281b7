"""users' stored provider keys and per-call token usage on operator endpoints

Revision ID: 0005_provider_catalog
Revises: 0004
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa

from chalicelib.db.types import UTCDateTime

revision = "0005_provider_catalog"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provider_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_provider_keys_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_keys")),
        sa.UniqueConstraint("user_id", "name", name="uq_provider_keys_user_id_name"),
    )
    op.create_table(
        "provider_usage",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("task_id", sa.Uuid(), nullable=True),
        sa.Column("endpoint", sa.String(length=64), nullable=False),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_provider_usage_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_usage")),
    )
    with op.batch_alter_table("provider_usage", schema=None) as batch_op:
        batch_op.create_index("ix_provider_usage_user_id_created_at", ["user_id", "created_at"], unique=False,
                              postgresql_include=["tokens"])


def downgrade() -> None:
    with op.batch_alter_table("provider_usage", schema=None) as batch_op:
        batch_op.drop_index("ix_provider_usage_user_id_created_at")
    op.drop_table("provider_usage")
    op.drop_table("provider_keys")
