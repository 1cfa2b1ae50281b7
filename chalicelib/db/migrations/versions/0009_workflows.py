"""workflows, versions, runs and run steps; tasks learn their run, step, item and task token

Revision ID: 0009_workflows
Revises: 0008_idempotency
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa

from chalicelib.db.types import JSONType, UTCDateTime

revision = "0009_workflows"
down_revision = "0008_idempotency"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workflows",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("current_version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("kind", sa.String(length=16), server_default="workflow", nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("deleted_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_workflows_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflows")),
    )
    op.create_index("ix_workflows_user_id_created_at_id", "workflows", ["user_id", "created_at", "id"])
    op.create_table(
        "workflow_versions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("workflow_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", JSONType, nullable=False),
        sa.Column("asl", JSONType, nullable=False),
        sa.Column("step_agent_types", JSONType, nullable=False),
        sa.Column("state_machine_arn", sa.String(length=512), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["workflow_id"], ["workflows.id"], name=op.f("fk_workflow_versions_workflow_id_workflows"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_versions")),
        sa.UniqueConstraint("workflow_id", "version", name="uq_workflow_versions_workflow_id_version"),
    )
    op.create_table(
        "workflow_runs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("workflow_id", sa.Uuid(), nullable=False),
        sa.Column("version_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("input", JSONType, nullable=False),
        sa.Column("output", JSONType, nullable=True),
        sa.Column("error", JSONType, nullable=True),
        sa.Column("parent_task_id", sa.Uuid(), nullable=True),
        sa.Column("execution", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("execution_arn", sa.String(length=512), nullable=True),
        sa.Column("executions", JSONType, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_workflow_runs_user_id_users"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["workflow_id"], ["workflows.id"], name=op.f("fk_workflow_runs_workflow_id_workflows"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["version_id"], ["workflow_versions.id"],
                                name=op.f("fk_workflow_runs_version_id_workflow_versions"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["parent_task_id"], ["tasks.id"], name=op.f("fk_workflow_runs_parent_task_id_tasks"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_runs")),
    )
    op.create_index("ix_workflow_runs_user_id_workflow_id_created_at_id", "workflow_runs",
                    ["user_id", "workflow_id", "created_at", "id"])
    op.create_index("ix_workflow_runs_user_id_status_created_at", "workflow_runs", ["user_id", "status", "created_at"])
    op.create_index("ix_workflow_runs_status_updated_at", "workflow_runs", ["status", "updated_at"])
    op.create_index("ix_workflow_runs_parent_task_id", "workflow_runs", ["parent_task_id"])
    op.create_table(
        "workflow_run_steps",
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("step_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("task_id", sa.Uuid(), nullable=True),
        sa.Column("output", JSONType, nullable=True),
        sa.Column("error", JSONType, nullable=True),
        sa.Column("items", JSONType, nullable=True),
        sa.Column("items_total", sa.Integer(), nullable=True),
        sa.Column("items_failed", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("approval_token", sa.Text(), nullable=True),
        sa.Column("decision", JSONType, nullable=True),
        sa.Column("decided_by", sa.Uuid(), nullable=True),
        sa.Column("decided_at", UTCDateTime(), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["workflow_runs.id"], name=op.f("fk_workflow_run_steps_run_id_workflow_runs"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "step_id", name="pk_workflow_run_steps"),
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("run_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("step_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("item_index", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("callback_token", sa.Text(), nullable=True))
        batch_op.create_foreign_key(op.f("fk_tasks_run_id_workflow_runs"), "workflow_runs", ["run_id"], ["id"],
                                    ondelete="CASCADE")
        batch_op.create_index("ix_tasks_run_id_step_id_item_index", ["run_id", "step_id", "item_index"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_run_id_step_id_item_index")
        batch_op.drop_constraint(op.f("fk_tasks_run_id_workflow_runs"), type_="foreignkey")
        batch_op.drop_column("callback_token")
        batch_op.drop_column("item_index")
        batch_op.drop_column("step_id")
        batch_op.drop_column("run_id")
    op.drop_table("workflow_run_steps")
    op.drop_table("workflow_runs")
    op.drop_table("workflow_versions")
    op.drop_table("workflows")
