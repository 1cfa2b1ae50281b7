"""agent platform: external agents, quality, subtasks, feedback, messages

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""
from alembic import op
import sqlalchemy as sa

from chalicelib.db.types import JSONType, UTCDateTime

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('agent_messages',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('sender_agent_id', sa.Uuid(), nullable=True),
    sa.Column('recipient_agent_id', sa.Uuid(), nullable=True),
    sa.Column('task_id', sa.Uuid(), nullable=True),
    sa.Column('body', JSONType, nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('read_at', UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['recipient_agent_id'], ['agents.id'], name=op.f('fk_agent_messages_recipient_agent_id_agents'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['sender_agent_id'], ['agents.id'], name=op.f('fk_agent_messages_sender_agent_id_agents'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_agent_messages_task_id_tasks'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_agent_messages_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agent_messages'))
    )
    with op.batch_alter_table('agent_messages', schema=None) as batch_op:
        batch_op.create_index('ix_agent_messages_recipient_agent_id_created_at', ['recipient_agent_id', 'created_at'], unique=False)
        batch_op.create_index('ix_agent_messages_task_id', ['task_id'], unique=False)

    op.create_table('task_feedback',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('task_id', sa.Uuid(), nullable=False),
    sa.Column('agent_id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('rating', sa.Integer(), nullable=False),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('processed_at', UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], name=op.f('fk_task_feedback_agent_id_agents'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_task_feedback_task_id_tasks'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_task_feedback_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_task_feedback')),
    sa.UniqueConstraint('task_id', 'user_id', name='uq_task_feedback_task_id_user_id')
    )
    with op.batch_alter_table('task_feedback', schema=None) as batch_op:
        batch_op.create_index('ix_task_feedback_agent_id_created_at', ['agent_id', 'created_at'], unique=False)

    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('mode', sa.String(length=16), server_default='managed', nullable=False))
        batch_op.add_column(sa.Column('api_key_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('max_concurrency', sa.Integer(), server_default=sa.text('10'), nullable=False))
        batch_op.add_column(sa.Column('quality_alpha', sa.Float(), server_default=sa.text('1.0'), nullable=False))
        batch_op.add_column(sa.Column('quality_beta', sa.Float(), server_default=sa.text('1.0'), nullable=False))
        batch_op.add_column(sa.Column('quality_updated_at', UTCDateTime(), nullable=True))
        batch_op.create_index('ix_agents_type_status', ['type', 'status'], unique=False)

    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('parent_task_id', sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column('lease_expires_at', UTCDateTime(), nullable=True))
        batch_op.create_index('ix_tasks_parent_task_id', ['parent_task_id'], unique=False)
        batch_op.create_index('ix_tasks_status_lease_expires_at', ['status', 'lease_expires_at'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_tasks_parent_task_id_tasks'), 'tasks', ['parent_task_id'], ['id'], ondelete='CASCADE')



def downgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_tasks_parent_task_id_tasks'), type_='foreignkey')
        batch_op.drop_index('ix_tasks_status_lease_expires_at')
        batch_op.drop_index('ix_tasks_parent_task_id')
        batch_op.drop_column('lease_expires_at')
        batch_op.drop_column('parent_task_id')

    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.drop_index('ix_agents_type_status')
        batch_op.drop_column('quality_updated_at')
        batch_op.drop_column('quality_beta')
        batch_op.drop_column('quality_alpha')
        batch_op.drop_column('max_concurrency')
        batch_op.drop_column('api_key_hash')
        batch_op.drop_column('mode')

    with op.batch_alter_table('task_feedback', schema=None) as batch_op:
        batch_op.drop_index('ix_task_feedback_agent_id_created_at')

    op.drop_table('task_feedback')
    with op.batch_alter_table('agent_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_agent_messages_task_id')
        batch_op.drop_index('ix_agent_messages_recipient_agent_id_created_at')

    op.drop_table('agent_messages')
