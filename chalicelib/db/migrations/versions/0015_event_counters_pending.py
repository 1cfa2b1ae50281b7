"""event counters: a partial index on the users with undelivered events (the notifier's sweep)

`ledger.pending_users` runs every notifier round (each second, and on every NOTIFY): users whose
`last_event_id > delivered_event_id`, least recently touched first. Without this index it read every user's
counter and sorted them each round; with it, it reads the pending users only, in order, up to its LIMIT.
On Postgres it is built CONCURRENTLY (outside the migration's transaction): the triggers keep writing.

Revision ID: 0015_event_counters_pending
Revises: 0014_task_lanes
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa

revision = "0015_event_counters_pending"
down_revision = "0014_task_lanes"
branch_labels = None
depends_on = None

NAME = "ix_event_counters_pending_updated_at"
PENDING = "last_event_id > delivered_event_id"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.create_index(NAME, "event_counters", ["updated_at"], postgresql_concurrently=True,
                            postgresql_where=sa.text(PENDING), if_not_exists=True)
    else:
        op.create_index(NAME, "event_counters", ["updated_at"], sqlite_where=sa.text(PENDING))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.drop_index(NAME, table_name="event_counters", postgresql_concurrently=True, if_exists=True)
    else:
        op.drop_index(NAME, table_name="event_counters")
