"""Workflows, their versions, runs and run steps (chalicelib.workflows; docs/workflows.md).

Postgres is the source of truth for what the API shows; Step Functions executions sequence the steps and
their history reconciles these rows. A version is immutable once written: a run pins the version it started
on, and `PUT /workflows/{id}` writes a new one.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, PrimaryKeyConstraint, String, Text, UniqueConstraint, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from chalicelib.db.models import Base, _created, _uuid_pk
from chalicelib.db.types import JSONType, UTCDateTime, utcnow


class Workflow(Base):
    __tablename__ = "workflows"

    id: Mapped[uuid.UUID] = _uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: the version new runs start on (the highest).
    current_version: Mapped[int] = mapped_column(Integer, nullable=False, default=1, server_default=text("1"))
    #: "workflow" (made through the API) or "plan" (an orchestrator task's plan, hidden from GET /workflows).
    kind: Mapped[str] = mapped_column(String(16), nullable=False, default="workflow", server_default="workflow")
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)
    #: soft delete: no new runs, no listing; running runs finish.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (Index("ix_workflows_user_id_created_at_id", "user_id", "created_at", "id"),)


class WorkflowVersion(Base):
    __tablename__ = "workflow_versions"

    id: Mapped[uuid.UUID] = _uuid_pk()
    workflow_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    #: the validated WorkflowDefinition (JSON).
    definition: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    #: the generated ASL with placeholders for queue URLs (chalicelib.workflows.asl).
    asl: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    #: agent_id steps: the agent type each resolved to when the version was written ({step_id: type}).
    step_agent_types: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    #: set when its state machine was first created (lazily, at the first run).
    state_machine_arn: Mapped[str | None] = mapped_column(String(512), nullable=True)
    created_at: Mapped[datetime] = _created()

    __table_args__ = (UniqueConstraint("workflow_id", "version", name="uq_workflow_versions_workflow_id_version"),)


class WorkflowRun(Base):
    __tablename__ = "workflow_runs"

    id: Mapped[uuid.UUID] = _uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    workflow_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"), nullable=False)
    version_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workflow_versions.id", ondelete="CASCADE"),
                                                  nullable=False)
    #: running | waiting_approval | succeeded | failed | cancelled | timed_out
    status: Mapped[str] = mapped_column(String(24), nullable=False, default="running")
    input: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    output: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    #: the orchestrator task whose plan this run is (it completes when the run ends).
    parent_task_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"),
                                                             nullable=True)
    #: the execution now sequencing the run (1 + redrives that started a new execution).
    execution: Mapped[int] = mapped_column(Integer, nullable=False, default=1, server_default=text("1"))
    execution_arn: Mapped[str | None] = mapped_column(String(512), nullable=True)
    #: every execution of the run: [{"execution": n, "arn": ..., "started_at": ..., "mode": "start"|"redrive"}]
    executions: Mapped[list[Any]] = mapped_column(JSONType, nullable=False, default=list)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        Index("ix_workflow_runs_user_id_workflow_id_created_at_id", "user_id", "workflow_id", "created_at", "id"),
        Index("ix_workflow_runs_user_id_status_created_at", "user_id", "status", "created_at"),
        # the reconciler: unfinished runs, oldest update first.
        Index("ix_workflow_runs_status_updated_at", "status", "updated_at"),
        Index("ix_workflow_runs_parent_task_id", "parent_task_id"),
    )


class RunStep(Base):
    """One step of one run: its status, attempts and outcome (for_each: of all its items)."""

    __tablename__ = "workflow_run_steps"

    run_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("workflow_runs.id", ondelete="CASCADE"))
    step_id: Mapped[str] = mapped_column(String(64))
    #: pending | running | succeeded | failed | skipped | waiting_approval | cancelled
    status: Mapped[str] = mapped_column(String(24), nullable=False, default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default=text("0"))
    #: the step's latest task (not for_each: its items' tasks are found by run_id/step_id/item_index).
    task_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    output: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    #: for_each: the resolved items (kept here so items are passed by reference, never through the state).
    items: Mapped[list[Any] | None] = mapped_column(JSONType, nullable=True)
    items_total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    items_failed: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default=text("0"))
    #: approvals: the waiting token, and the decision once made (decided once).
    approval_token: Mapped[str | None] = mapped_column(Text, nullable=True)
    decision: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    decided_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)

    __table_args__ = (PrimaryKeyConstraint("run_id", "step_id", name="pk_workflow_run_steps"),)
