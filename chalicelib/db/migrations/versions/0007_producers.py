"""event producers: producer keys (encrypted signing secrets) and ingress receipts (idempotency)

Revision ID: 0007_producers
Revises: 0005_provider_catalog
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa

from chalicelib.db.types import UTCDateTime

revision = "0007_producers"
down_revision = "0005_provider_catalog"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "producer_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_producer_keys_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_producer_keys")),
    )
    op.create_index("ix_producer_keys_user_id", "producer_keys", ["user_id"], unique=False)
    op.create_table(
        "ingress_receipts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("key_id", sa.Uuid(), nullable=True),
        sa.Column("correlation_id", sa.String(length=128), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_ingress_receipts_user_id_users"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name=op.f("fk_ingress_receipts_task_id_tasks"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingress_receipts")),
        sa.UniqueConstraint("user_id", "idempotency_key", name="uq_ingress_receipts_user_id_idempotency_key"),
    )


def downgrade() -> None:
    op.drop_table("ingress_receipts")
    op.drop_index("ix_producer_keys_user_id", table_name="producer_keys")
    op.drop_table("producer_keys")
