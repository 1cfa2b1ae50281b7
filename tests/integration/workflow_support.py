"""Driving workflow runs end to end on the embedded moto (Step Functions execution on), in-process.

`WorkflowHarness` starts runs (rows, a state machine, an execution), then pumps the real consumers —
functions.agent_consumer and functions.workflow_control, through infra.local.runner's EventSourceRunner with
Lambda-shaped events — plus the outbox relay, until a condition holds. The API's run services are used
when they exist (chalicelib.services.runs); until then `start`/`approve`/`cancel`/`redrive` do what the
contract says those services do, with rows written directly.
"""

from __future__ import annotations

import json
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
from chalicelib.db.types import utcnow
from chalicelib.db.workflow_models import RunStep, Workflow, WorkflowRun, WorkflowVersion
from chalicelib.workflows.definition import WorkflowDefinition
from infra import manifest
from infra.local.runner import EventSourceRunner
from tests.integration.conftest import PREFIX
from tests.integration.workflow_asl import render_asl

ACCOUNT = "123456789012"


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

    # -- runs --------------------------------------------------------------------------------

    def create(self, user_id: uuid.UUID, definition: dict[str, Any], step_types: dict[str, str] | None = None
               ) -> uuid.UUID:
        parsed = WorkflowDefinition.model_validate(definition)
        with self.db.transaction() as s:
            wf = Workflow(user_id=user_id, name=f"wf-{uuid.uuid4().hex[:6]}")
            s.add(wf)
            s.flush()
            version = WorkflowVersion(workflow_id=wf.id, version=1, definition=parsed.model_dump(mode="json"),
                                      asl={}, step_agent_types=step_types or {})
            s.add(version)
            s.flush()
            return version.id

    def start(self, user_id: uuid.UUID, version_id: uuid.UUID, run_input: dict[str, Any] | None = None
              ) -> uuid.UUID:
        with self.db.transaction() as s:
            version = s.get(WorkflowVersion, version_id)
            assert version is not None
            parsed = WorkflowDefinition.model_validate(version.definition)
            run = WorkflowRun(user_id=user_id, workflow_id=version.workflow_id, version_id=version_id,
                              status="running", input=run_input or {}, execution=1, executions=[])
            s.add(run)
            s.flush()
            for step in parsed.steps:
                s.add(RunStep(run_id=run.id, step_id=step.step_id, status="pending", attempts=0, items_failed=0))
            run_id = run.id
            arn = self._machine(version, parsed)
        self._execute(run_id, arn, 1, "start")
        return run_id

    def _machine(self, version: WorkflowVersion, parsed: WorkflowDefinition) -> str:
        name = f"{PREFIX}-wf-{version.id.hex}"
        asl = render_asl(parsed, version.step_agent_types, self._queue_url)
        role = self.c.settings.workflow_role_arn
        try:
            arn = self.sfn.create_state_machine(name=name, definition=json.dumps(asl), roleArn=role)
        except self.sfn.exceptions.StateMachineAlreadyExists:
            return f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:{name}"
        return str(arn["stateMachineArn"])

    def _queue_url(self, suffix: str) -> str:
        return str(self.sqs.get_queue_url(QueueName=f"{PREFIX}-{suffix}")["QueueUrl"])

    def _execute(self, run_id: uuid.UUID, machine_arn: str, n: int, mode: str) -> None:
        started = utcnow()
        arn = self.sfn.start_execution(stateMachineArn=machine_arn, name=f"{run_id.hex}-{n}",
                                       input=json.dumps({"run_id": str(run_id), "execution": n}))["executionArn"]
        with self.db.transaction() as s:
            run = s.get(WorkflowRun, run_id)
            assert run is not None
            run.execution_arn = arn
            run.executions = [*run.executions, {"execution": n, "arn": arn, "started_at": started.isoformat(),
                                                "mode": mode}]

    def redrive(self, run_id: uuid.UUID) -> None:
        """What the API's redrive does where RedriveExecution is missing (moto): a new execution."""
        with self.db.transaction() as s:
            run = s.get(WorkflowRun, run_id)
            assert run is not None and run.status in ("failed", "timed_out")
            for row in s.scalars(select(RunStep).where(RunStep.run_id == run_id,
                                                       RunStep.status.in_(("failed", "cancelled", "timed_out")))):
                row.status, row.error, row.finished_at = "pending", None, None
            run.status, run.error, run.finished_at, run.execution = "running", None, None, run.execution + 1
            version = s.get(WorkflowVersion, run.version_id)
            assert version is not None
            arn = self._machine(version, WorkflowDefinition.model_validate(version.definition))
            n = run.execution
        self._execute(run_id, arn, n, "new_execution")

    def approve(self, run_id: uuid.UUID, step_id: str, approve: bool = True) -> None:
        """What the API's decision does: answer the gate's token, record the decision."""
        with self.db.transaction() as s:
            row = s.get(RunStep, (run_id, step_id))
            run = s.get(WorkflowRun, run_id)
            assert row is not None and run is not None and row.approval_token
            now = utcnow()
            row.decision, row.decided_at = {"approve": approve}, now
            row.status, row.finished_at = ("succeeded" if approve else "failed"), now
            row.output = {"approved": approve}
            if not approve:
                row.error = {"code": "APPROVAL_REJECTED", "message": "rejected"}
            run.status = "running"
            token = row.approval_token
        if approve:
            self.c.callbacks.succeed(token, {"step_id": step_id, "status": "succeeded"})
        else:
            self.c.callbacks.fail(token, "Ymera.ApprovalRejected", "rejected")

    def cancel(self, run_id: uuid.UUID) -> None:
        """What the API's cancel does: run cancelled, open tasks cancelled through TaskService.cancel."""
        from chalicelib.services.audit import RequestMeta

        with self.db.transaction() as s:
            run = s.get(WorkflowRun, run_id)
            assert run is not None
            run.status, run.finished_at = "cancelled", utcnow()
            user_id = run.user_id
            open_tasks = list(s.scalars(select(Task.id).where(Task.run_id == run_id,
                                                              Task.status.in_(("pending", "queued", "processing")))))
            approvals = [(r.step_id, r.approval_token) for r in s.scalars(select(RunStep).where(
                RunStep.run_id == run_id, RunStep.status == "waiting_approval"))]
        for task_id in open_tasks:
            self.c.tasks.cancel(user_id, task_id, RequestMeta())
        for _, token in approvals:
            if token:
                self.c.callbacks.fail(token, "Ymera.RunCancelled", "the run was cancelled")

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
