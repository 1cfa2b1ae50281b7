"""Driving workflow runs end to end on the embedded moto (Step Functions execution on), in-process.

`WorkflowHarness` creates workflows and starts, decides, cancels and redrives runs through the API's services
(chalicelib.services.workflows / runs: real state machines, real executions), then pumps the real consumers —
functions.agent_consumer and functions.workflow_control, through infra.local.runner's EventSourceRunner with
Lambda-shaped events — plus the outbox relay, until a condition holds.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from sqlalchemy import func, select

from chalicelib.config import Settings
from chalicelib.container import Container, set_container
from chalicelib.db.models import Agent, Task, User
from chalicelib.db.session import Database
from chalicelib.db.workflow_models import RunStep, Workflow, WorkflowRun, WorkflowVersion
from chalicelib.workflows.definition import WorkflowDefinition
from infra import manifest
from infra.local.runner import EventSourceRunner
from tests.integration.conftest import PREFIX


@pytest.fixture
def wf_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from moto import mock_aws

    from infra.bootstrap import bootstrap, ensure_workflow_role

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):  # type: ignore[arg-type]
        sqs = boto3.client("sqs", region_name="us-east-1")
        bootstrap(sqs, PREFIX, visibility_timeout=5)
        role = ensure_workflow_role(boto3.client("iam", region_name="us-east-1"), sqs, PREFIX)
        monkeypatch.setenv("YMERA_WORKFLOW_ROLE_ARN", role)
        yield sqs


@pytest.fixture
def wf_container(settings: Settings, db: Database, wf_aws: Any, monkeypatch: pytest.MonkeyPatch
                 ) -> Iterator[Container]:
    c = Container(Settings(), database=db)
    set_container(c)
    yield c
    set_container(None)


@pytest.fixture
def harness(wf_container: Container, wf_aws: Any) -> WorkflowHarness:
    return WorkflowHarness(wf_container, wf_aws)


def make_user(db: Database, name: str | None = None) -> uuid.UUID:
    name = name or f"u{uuid.uuid4().hex[:8]}"
    with db.transaction() as s:
        user = User(username=name, email=f"{name}@example.com", password_hash="x")
        s.add(user)
        s.flush()
        return user.id


def make_agent(db: Database, user_id: uuid.UUID, agent_type: str = "validation", *, mode: str = "managed",
               status: str = "active") -> uuid.UUID:
    with db.transaction() as s:
        agent = Agent(user_id=user_id, name=f"{agent_type}-{uuid.uuid4().hex[:6]}", type=agent_type, mode=mode,
                      status=status, config={})
        s.add(agent)
        s.flush()
        return agent.id


class WorkflowHarness:
    def __init__(self, container: Container, sqs: Any) -> None:
        self.c, self.db, self.sqs = container, container.db, sqs
        self.sfn = boto3.client("stepfunctions", region_name="us-east-1")
        specs = [f for f in manifest.functions() if f.queue is not None and
                 (f.name.startswith("agent-") or f.name == "workflow-control")]
        self.specs = {f.name: f for f in specs}
        self.runner = EventSourceRunner(sqs, PREFIX, specs, wait_seconds=0)
        #: agent queues not pumped (their steps' messages wait, e.g. to make a step time out).
        self.paused: set[str] = set()

    # -- runs (through the API's services: chalicelib.services.workflows / runs) -------------

    def create(self, user_id: uuid.UUID, definition: dict[str, Any]) -> uuid.UUID:
        """A workflow through WorkflowService (validated, compiled); returns its id."""
        from chalicelib.services.audit import RequestMeta

        body = {"name": f"wf-{uuid.uuid4().hex[:6]}", **definition}
        return self.c.workflows.create(user_id, body, RequestMeta()).id

    def create_unchecked(self, user_id: uuid.UUID, definition: dict[str, Any], step_types: dict[str, str]
                         ) -> uuid.UUID:
        """A workflow written directly (skipping create-time validation): what the runtime must survive
        when the world changed after a version was written (an agent gone, another user's agent)."""
        from chalicelib.workflows import asl

        parsed = WorkflowDefinition.model_validate(definition)
        with self.db.transaction() as s:
            wf = Workflow(user_id=user_id, name=f"wf-{uuid.uuid4().hex[:6]}")
            s.add(wf)
            s.flush()
            s.add(WorkflowVersion(workflow_id=wf.id, version=1, definition=parsed.model_dump(mode="json"),
                                  asl=asl.compile_definition(parsed, step_types), step_agent_types=step_types))
            return wf.id

    def start(self, user_id: uuid.UUID, workflow_id: uuid.UUID, run_input: dict[str, Any] | None = None
              ) -> uuid.UUID:
        from chalicelib.schemas.workflows import RunStart
        from chalicelib.services.audit import RequestMeta

        result = self.c.runs.start(user_id, workflow_id, RunStart(input=run_input or {}), RequestMeta())
        assert result.run_id is not None
        return result.run_id

    def _queue_url(self, suffix: str) -> str:
        return str(self.sqs.get_queue_url(QueueName=f"{PREFIX}-{suffix}")["QueueUrl"])

    def _owner(self, run_id: uuid.UUID) -> uuid.UUID:
        return self.run(run_id).user_id

    def redrive(self, run_id: uuid.UUID) -> None:
        from chalicelib.services.audit import RequestMeta

        self.c.runs.redrive(self._owner(run_id), run_id, RequestMeta())

    def approve(self, run_id: uuid.UUID, step_id: str, approve: bool = True) -> None:
        from chalicelib.schemas.workflows import DecisionRequest
        from chalicelib.services.audit import RequestMeta

        self.c.runs.decide(self._owner(run_id), False, run_id, step_id, DecisionRequest(approve=approve),
                           RequestMeta())

    def cancel(self, run_id: uuid.UUID) -> None:
        from chalicelib.services.audit import RequestMeta

        self.c.runs.cancel(self._owner(run_id), run_id, RequestMeta())

    # -- pumping ---------------------------------------------------------------------------

    def pump_once(self) -> int:
        handled = 0
        for name, spec in self.specs.items():
            if name.removeprefix("agent-") in self.paused:
                continue
            handled += self.runner.poll_once(spec, wait_seconds=0)
        self.c.relay.run_once()
        return handled

    def drive(self, until: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump_once()
            if until():
                return
            time.sleep(0.02)
        raise AssertionError(f"condition not reached in {timeout}s: {self.describe()}")

    def describe(self) -> str:
        with self.db.read() as s:
            runs = [(r.id, r.status, r.error) for r in s.scalars(select(WorkflowRun))]
            steps = [(r.step_id, r.status, r.error) for r in s.scalars(select(RunStep))]
        return f"runs={runs} steps={steps}"

    # -- reading ---------------------------------------------------------------------------

    def run(self, run_id: uuid.UUID) -> WorkflowRun:
        with self.db.read() as s:
            run = s.get(WorkflowRun, run_id)
            assert run is not None
            s.expunge(run)
            return run

    def status(self, run_id: uuid.UUID) -> str:
        return self.run(run_id).status

    def steps(self, run_id: uuid.UUID) -> dict[str, RunStep]:
        with self.db.read() as s:
            rows = list(s.scalars(select(RunStep).where(RunStep.run_id == run_id)))
            for r in rows:
                s.expunge(r)
            return {r.step_id: r for r in rows}

    def task_counts(self, run_id: uuid.UUID) -> dict[str, int]:
        with self.db.read() as s:
            return {str(k): int(v) for k, v in s.execute(select(Task.step_id, func.count()).where(
                Task.run_id == run_id).group_by(Task.step_id)).all()}

    def execution_status(self, run_id: uuid.UUID) -> str:
        arn = self.run(run_id).execution_arn
        return str(self.sfn.describe_execution(executionArn=arn)["status"])
