"""Approval decisions, cancel and redrive over the API. Step Functions is a recording fake here (the adapter has
its own tests against moto); the approval's token is put in place as the control consumer would."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from sqlalchemy import select, update

from chalicelib.db.models import AuditLog, OutboxMessage, Task
from chalicelib.db.workflow_models import RunStep, WorkflowRun
from chalicelib.errors import ApprovalAlreadyDecidedError
from chalicelib.schemas.workflows import DecisionRequest
from chalicelib.services.meta import RequestMeta
from chalicelib.services.run_answers import direct_publisher
from tests.integration.conftest import Api
from tests.integration.test_api_auth import assert_envelope
from tests.integration.test_openapi import _admin_token
from tests.integration.test_workflow_api import aws, create_workflow, settings  # noqa: F401 - fixtures
from tests.integration.test_workflow_api_runs import FakeMachines, start

TOKEN = "token-of-the-gate"


class FakeCallbacks:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def succeed(self, token: str, output: dict[str, Any]) -> str:
        self.calls.append(("succeed", token, output))
        return "ok"

    def fail(self, token: str, error: str, cause: str) -> str:
        self.calls.append(("fail", token, error, cause))
        return "ok"

    def heartbeat(self, token: str) -> str:
        return "ok"


@pytest.fixture
def fakes(container: Any, db: Any) -> tuple[FakeMachines, FakeCallbacks]:
    machines, callbacks = FakeMachines(), FakeCallbacks()
    container.runs.launcher.state_machines = machines
    container.runs.publish_answer = direct_publisher(db, lambda: callbacks)
    return machines, callbacks


def waiting_run(api: Api, db: Any) -> uuid.UUID:
    """A run whose `check` succeeded and whose `gate` waits for a decision (what the control consumer records)."""
    wf = create_workflow(api)
    run_id = uuid.UUID(start(api, wf["id"]).json_body["id"])
    with db.transaction() as session:
        session.execute(update(RunStep).where(RunStep.run_id == run_id, RunStep.step_id == "check")
                        .values(status="succeeded", attempts=1, output={"valid": True}))
        session.execute(update(RunStep).where(RunStep.run_id == run_id, RunStep.step_id == "gate")
                        .values(status="waiting_approval", approval_token=TOKEN))
        session.execute(update(WorkflowRun).where(WorkflowRun.id == run_id).values(status="waiting_approval"))
    return run_id


def decide(api: Api, run_id: Any, body: dict[str, Any], step: str = "gate", token: str | None = None) -> Any:
    return api.call("POST", f"/runs/{run_id}/steps/{step}/decision", body, token=token)


def states_rows(db: Any) -> list[OutboxMessage]:
    with db.read() as session:
        return list(session.scalars(select(OutboxMessage).where(OutboxMessage.destination == "states")
                                    .order_by(OutboxMessage.created_at)))


def test_the_owner_approves_once_and_the_token_is_answered(api: Api, other_api: Api, db: Any,
                                                          fakes: tuple[FakeMachines, FakeCallbacks]) -> None:
    _, callbacks = fakes
    user = api.signup()
    run_id = waiting_run(api, db)
    waiting = api.call("GET", f"/runs/{run_id}").json_body
    assert waiting["status"] == "waiting_approval" and waiting["steps"][1]["approval"]["waiting"] is True
    other_api.signup()
    assert_envelope(decide(other_api, run_id, {"approve": True, "payload": {"reviewer": "b"}}), 404, "RUN_NOT_FOUND")
    error = assert_envelope(decide(api, run_id, {"approve": True, "payload": {"reviewer": 7}}), 422,
                            "VALIDATION_ERROR")
    assert error["details"]["errors"][0]["path"] == "/reviewer"
    assert_envelope(decide(api, run_id, {"approve": True}), 422, "VALIDATION_ERROR")  # the schema requires one
    assert callbacks.calls == [] and states_rows(db) == []

    r = decide(api, run_id, {"approve": True, "comment": "looks right", "payload": {"reviewer": "ann"}})
    assert r.status_code == 200, r.json_body
    gate = r.json_body["steps"][1]
    assert gate["status"] == "succeeded" and r.json_body["status"] == "running"
    assert gate["approval"]["decision"] == "approved" and gate["approval"]["waiting"] is False
    assert gate["approval"]["comment"] == "looks right" and gate["approval"]["payload"] == {"reviewer": "ann"}
    assert gate["approval"]["decided_at"] is not None
    output = {"step_id": "gate", "status": "succeeded", "approved": True, "comment": "looks right",
              "payload": {"reviewer": "ann"}}
    assert callbacks.calls == [("succeed", TOKEN, output)]
    (row,) = states_rows(db)
    assert row.payload == {"action": "succeed", "token": TOKEN, "output": output}
    assert row.published_at is not None
    with db.read() as session:
        decided_by = session.scalar(select(RunStep.decided_by).where(RunStep.step_id == "gate"))
        audit = session.scalar(select(AuditLog).where(AuditLog.event_type == "workflow_run.decision"))
    assert audit is not None and audit.details["decided_by"] == str(decided_by) and audit.details["approve"] is True
    assert decided_by is not None and user

    assert_envelope(decide(api, run_id, {"approve": False}), 409, "APPROVAL_ALREADY_DECIDED")
    assert_envelope(decide(api, run_id, {"approve": True}, step="check"), 409, "APPROVAL_NOT_PENDING")
    assert_envelope(decide(api, run_id, {"approve": True}, step="final"), 409, "APPROVAL_NOT_PENDING")
    assert_envelope(decide(api, run_id, {"approve": True}, step="nope"), 404, "NOT_FOUND")
    assert len(callbacks.calls) == 1


def test_an_admin_may_reject_and_the_step_fails(api: Api, db: Any, fakes: tuple[FakeMachines, FakeCallbacks]) -> None:
    _, callbacks = fakes
    api.signup()
    run_id = waiting_run(api, db)
    admin = _admin_token(api)
    r = decide(api, run_id, {"approve": False, "comment": "not yet"}, token=admin)
    assert r.status_code == 200, r.json_body
    gate = r.json_body["steps"][1]
    assert gate["status"] == "failed" and gate["error"]["code"] == "APPROVAL_REJECTED"
    assert gate["approval"]["decision"] == "rejected"
    assert callbacks.calls == [("fail", TOKEN, "Ymera.ApprovalRejected", "APPROVAL_REJECTED: not yet")]


def test_an_approval_not_reached_yet_is_not_pending(api: Api, db: Any,
                                                    fakes: tuple[FakeMachines, FakeCallbacks]) -> None:
    api.signup()
    wf = create_workflow(api)
    run_id = start(api, wf["id"]).json_body["id"]
    assert_envelope(decide(api, run_id, {"approve": True, "payload": {"reviewer": "a"}}), 409,
                    "APPROVAL_NOT_PENDING")
    run_id = waiting_run(api, db)
    with db.transaction() as session:  # the reconciler found the execution timed out; the gate row still waits
        session.execute(update(WorkflowRun).where(WorkflowRun.id == run_id).values(status="timed_out"))
    assert_envelope(decide(api, run_id, {"approve": True, "payload": {"reviewer": "a"}}), 409,
                    "APPROVAL_NOT_PENDING")


def test_two_concurrent_decisions_one_wins(api: Api, db: Any, container: Any,
                                           fakes: tuple[FakeMachines, FakeCallbacks]) -> None:
    _, callbacks = fakes
    api.signup()
    run_id = waiting_run(api, db)
    with db.read() as session:
        owner = session.scalar(select(WorkflowRun.user_id))
    assert owner is not None
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def one(approve: bool) -> None:
        barrier.wait()
        try:
            container.runs.decide(owner, False, run_id, "gate",
                                  DecisionRequest(approve=approve, payload={"reviewer": "x"}), RequestMeta())
            outcomes.append("ok")
        except ApprovalAlreadyDecidedError:
            outcomes.append("already")

    threads = [threading.Thread(target=one, args=(i % 2 == 0,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["already", "already", "already", "ok"]
    assert len(callbacks.calls) == 1 and len(states_rows(db)) == 1


def test_cancel_stops_the_run_its_tasks_and_its_waiting_approval(api: Api, other_api: Api, db: Any,
                                                                fakes: tuple[FakeMachines, FakeCallbacks]) -> None:
    machines, callbacks = fakes
    api.signup()
    agent = api.agent()
    run_id = waiting_run(api, db)
    with db.transaction() as session:
        owner = session.scalar(select(WorkflowRun.user_id))
        task = Task(user_id=owner, agent_id=uuid.UUID(agent["id"]), agent_type="validation", title="step",
                    input_data={}, status="queued", run_id=run_id, step_id="check")
        session.add(task)
        session.flush()
        task_id = task.id
    other_api.signup()
    assert_envelope(other_api.call("POST", f"/runs/{run_id}/cancel"), 404, "RUN_NOT_FOUND")
    r = api.call("POST", f"/runs/{run_id}/cancel")
    assert r.status_code == 200, r.json_body
    assert r.json_body["status"] == "cancelled" and r.json_body["finished_at"] is not None
    statuses = {s["step_id"]: s["status"] for s in r.json_body["steps"]}
    assert statuses == {"check": "succeeded", "gate": "cancelled", "final": "cancelled"}
    with db.read() as session:
        assert session.scalar(select(Task.status).where(Task.id == task_id)) == "cancelled"
        events = set(session.scalars(select(AuditLog.event_type)))
    assert {"workflow_run.cancelled", "task.cancelled"} <= events
    assert callbacks.calls == [("fail", TOKEN, "Ymera.RunCancelled", "RUN_CANCELLED: the run was cancelled")]
    (stop,) = machines.named("stop")
    assert stop[2] == "Ymera.RunCancelled"
    assert_envelope(api.call("POST", f"/runs/{run_id}/cancel"), 409, "RUN_NOT_CANCELLABLE")


def failed_run(api: Api, db: Any) -> uuid.UUID:
    run_id = waiting_run(api, db)
    with db.transaction() as session:
        session.execute(update(RunStep).where(RunStep.run_id == run_id, RunStep.step_id == "gate")
                        .values(status="failed", error={"code": "APPROVAL_REJECTED", "message": "no"},
                                decision={"approved": False, "comment": "no", "payload": None}))
        session.execute(update(RunStep).where(RunStep.run_id == run_id, RunStep.step_id == "final")
                        .values(status="cancelled", output=PARTIAL))
        session.execute(update(WorkflowRun).where(WorkflowRun.id == run_id)
                        .values(status="failed", error={"Error": "Ymera.ApprovalRejected"}))
    return run_id


#: a step's partial outcome (a for_each step's per-item results): a redrive keeps it for the short-circuits.
PARTIAL = {"results": {"0": {"status": "succeeded", "task_id": None}}}


def test_redrive_starts_execution_two_where_redrive_is_missing(api: Api, other_api: Api, db: Any,
                                                              fakes: tuple[FakeMachines, FakeCallbacks]) -> None:
    machines, _ = fakes
    api.signup()
    run_id = failed_run(api, db)
    other_api.signup()
    assert_envelope(other_api.call("POST", f"/runs/{run_id}/redrive"), 404, "RUN_NOT_FOUND")
    r = api.call("POST", f"/runs/{run_id}/redrive")
    assert r.status_code == 200, r.json_body
    run = r.json_body
    assert run["status"] == "running" and run["error"] is None and run["execution"] == 2
    statuses = {s["step_id"]: s["status"] for s in run["steps"]}
    assert statuses == {"check": "succeeded", "gate": "pending", "final": "pending"}
    assert run["steps"][0]["output"] == {"valid": True}  # kept: the new execution short-circuits it
    assert run["steps"][1]["approval"]["decision"] is None  # the gate asks again
    assert run["steps"][2]["output"] == PARTIAL
    first_arn = run["executions"][0]["arn"]
    assert machines.named("redrive") == [("redrive", first_arn)]
    assert machines.named("start")[-1] == ("start", f"{run_id.hex}-2", {"run_id": str(run_id), "execution": 2})
    assert [(e["execution"], e["mode"]) for e in run["executions"]] == [(1, "start"), (2, "start")]
    assert run["executions"][1]["arn"].endswith(f"{run_id.hex}-2")
    assert_envelope(api.call("POST", f"/runs/{run_id}/redrive"), 409, "RUN_NOT_REDRIVABLE")
    with db.read() as session:
        assert "workflow_run.redriven" in set(session.scalars(select(AuditLog.event_type)))


def test_redrive_uses_redrive_execution_where_the_endpoint_has_it(api: Api, db: Any,
                                                                 fakes: tuple[FakeMachines, FakeCallbacks]) -> None:
    machines, _ = fakes
    machines.redrives = True
    api.signup()
    run_id = failed_run(api, db)
    run = api.call("POST", f"/runs/{run_id}/redrive").json_body
    assert run["status"] == "running" and run["execution"] == 1  # the same execution carries on
    assert [(e["execution"], e["mode"]) for e in run["executions"]] == [(1, "start"), (1, "redrive")]
    assert len(machines.named("start")) == 1


def test_only_failed_or_timed_out_runs_are_redriven(api: Api, db: Any,
                                                    fakes: tuple[FakeMachines, FakeCallbacks]) -> None:
    api.signup()
    wf = create_workflow(api)
    run_id = start(api, wf["id"]).json_body["id"]
    assert_envelope(api.call("POST", f"/runs/{run_id}/redrive"), 409, "RUN_NOT_REDRIVABLE")
    with db.transaction() as session:
        session.execute(update(WorkflowRun).values(status="timed_out"))
    assert api.call("DELETE", f"/workflows/{wf['id']}").status_code == 204
    error = assert_envelope(api.call("POST", f"/runs/{run_id}/redrive"), 409, "RUN_NOT_REDRIVABLE")
    assert "deleted" in error["message"]
    assert api.call("GET", f"/runs/{run_id}").status_code == 200  # a deleted workflow's runs stay readable


def test_a_redrive_that_cannot_reach_step_functions_leaves_the_run_failed(
        api: Api, db: Any, container: Any, fakes: tuple[FakeMachines, FakeCallbacks]) -> None:
    from chalicelib.errors import DependencyUnavailableError

    machines, _ = fakes
    api.signup()
    run_id = failed_run(api, db)

    def down(arn: str) -> bool:
        raise DependencyUnavailableError("down", {"dependency": "stepfunctions"})

    machines.redrive_execution = down  # type: ignore[method-assign]
    assert_envelope(api.call("POST", f"/runs/{run_id}/redrive"), 503, "DEPENDENCY_UNAVAILABLE")
    run = api.call("GET", f"/runs/{run_id}").json_body
    assert run["status"] == "failed" and run["error"]["code"] == "REDRIVE_FAILED"  # not left running


def test_a_run_that_never_started_is_redriven_with_a_new_execution(
        api: Api, db: Any, container: Any, fakes: tuple[FakeMachines, FakeCallbacks]) -> None:
    machines, _ = fakes
    machines.redrives = True  # even where RedriveExecution exists: there is no execution to resume
    api.signup()
    wf = create_workflow(api)
    run_id = uuid.UUID(start(api, wf["id"]).json_body["id"])
    with db.transaction() as session:  # what a start that failed leaves
        session.execute(update(WorkflowRun).values(status="failed", execution_arn=None, executions=[],
                                                   error={"code": "START_FAILED", "message": "down"}))
    run = api.call("POST", f"/runs/{run_id}/redrive").json_body
    assert run["status"] == "running" and run["execution"] == 2
    assert machines.named("redrive") == []
    assert machines.named("start")[-1][1] == f"{run_id.hex}-2"
