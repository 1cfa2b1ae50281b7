"""task lanes: a partial index on the owner's active tasks per agent type and priority (docs/scheduling.md)

The lane of a new managed task is chosen from its owner's active (pending/queued/processing) tasks of the
type, counted up to the allowances; this index keeps that a bounded read however many tasks the owner has.
On Postgres it is built CONCURRENTLY (outside the migration's transaction): `tasks` keeps taking writes.

Revision ID: 0014_task_lanes
Revises: 0013_webhooks
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa

revision = "0014_task_lanes"
down_revision = "0013_webhooks"
branch_labels = None
depends_on = None

NAME = "ix_tasks_active_user_id_agent_type_priority"
ACTIVE = "status IN ('pending', 'queued', 'processing')"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.create_index(NAME, "tasks", ["user_id", "agent_type", "priority"], postgresql_concurrently=True,
                            postgresql_where=sa.text(ACTIVE), if_not_exists=True)
    else:
        op.create_index(NAME, "tasks", ["user_id", "agent_type", "priority"], sqlite_where=sa.text(ACTIVE))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.drop_index(NAME, table_name="tasks", postgresql_concurrently=True, if_exists=True)
    else:
        op.drop_index(NAME, table_name="tasks")
