"""Orchestrator tasks on the workflow machinery: the API (chalice test client) over the workflow harness's
container (embedded moto with Step Functions execution on), so a plan runs end to end in-process."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from chalicelib.container import Container
from chalicelib.db.models import Task
from chalicelib.db.session import Database
from chalicelib.db.workflow_models import WorkflowRun
from tests.integration.conftest import Api
from tests.integration.workflow_support import WorkflowHarness, harness, wf_aws, wf_container

__all__ = ["harness", "wf_api", "wf_aws", "wf_container"]

OK_SCHEMA = {"schema": {"type": "object", "required": ["id"]}, "payload": {"id": "A-1"}}
BAD_SCHEMA = {"schema": {"type": "nonsense"}, "payload": {}}  # valid input, but the agent fails on it
CODE = {"source": "def total(items):\n    return sum(i.price for i in items)\n"}
FINAL = ("completed", "failed", "cancelled", "timed_out")


@pytest.fixture
def wf_api(wf_container: Container) -> Iterator[Api]:
    from chalice.test import Client

    from app import app

    with Client(app) as client:
        yield Api(client)


def start(api: Api, orchestrator: dict[str, Any], input_data: dict[str, Any]) -> dict[str, Any]:
    r = api.call("POST", "/tasks", {"agent_id": orchestrator["id"], "title": "plan", "input_data": input_data})
    assert r.status_code == 202, r.json_body
    return dict(r.json_body)


def get(api: Api, task_id: str) -> dict[str, Any]:
    return dict(api.call("GET", f"/tasks/{task_id}").json_body)


def children(db: Database, parent_id: str) -> dict[str, Task]:
    """The orchestrator task's step tasks by step id (each is a subtask of it)."""
    with db.read() as session:
        rows = list(session.scalars(select(Task).where(Task.parent_task_id == uuid.UUID(parent_id))))
        session.expunge_all()
        return {str(row.step_id): row for row in rows}


def plan_run(db: Database, parent_id: str) -> WorkflowRun | None:
    with db.read() as session:
        run = session.scalars(select(WorkflowRun).where(WorkflowRun.parent_task_id == uuid.UUID(parent_id))).first()
        if run is not None:
            session.expunge(run)
        return run


def finish(harness: WorkflowHarness, api: Api, task_id: str, timeout: float = 30.0) -> dict[str, Any]:
    """Pump the consumers (agent queues, control queue, outbox relay) until the task is final."""
    harness.drive(lambda: get(api, task_id)["status"] in FINAL, timeout=timeout)
    return get(api, task_id)
