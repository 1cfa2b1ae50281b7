"""audit log indexes for the admin list and the resource filters

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_logs", schema=None) as batch_op:
        batch_op.create_index("ix_audit_logs_timestamp_id", ["timestamp", "id"], unique=False)
        batch_op.create_index("ix_audit_logs_resource_type_resource_id_timestamp",
                              ["resource_type", "resource_id", "timestamp"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("audit_logs", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_logs_resource_type_resource_id_timestamp")
        batch_op.drop_index("ix_audit_logs_timestamp_id")
