"""Nothing stuck: a dead-lettered task message fails its task at once (DELIVERY_FAILED) and stays in the
DLQ; a task stuck `processing` ends `timed_out`; a task never delivered fails; orchestrator parents and
their plans' runs cascade. Real Postgres, moto SQS (Step Functions execution on for plans); the reaper is
driven by the local runner like the deployed schedule."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from chalicelib.container import Container
from chalicelib.db.models import Agent, Task, TaskResult
from chalicelib.db.session import Database
from chalicelib.db.types import utcnow
from chalicelib.schemas.tasks import TaskMessage
from chalicelib.services.reaper import TaskReaper
from infra import manifest
from infra.local.runner import EventSourceRunner
from tests.integration.conftest import PREFIX, Api
from tests.integration.orchestrator_support import (
    OK_SCHEMA,
    children,
    finish,
    harness,
    plan_run,
    start,
    wf_api,
    wf_aws,
    wf_container,
)
from tests.integration.test_api_tasks import create_task
from tests.integration.test_dlq import depth
from tests.integration.workflow_support import WorkflowHarness

__all__ = ["harness", "wf_api", "wf_aws", "wf_container"]

REAPER = next(s for s in manifest.functions() if s.name == "task-reaper")


def task_row(db: Database, task_id: Any) -> tuple[Task, TaskResult | None]:
    with db.read() as session:
        task = session.scalar(select(Task).where(Task.id == task_id))
        result = session.scalar(select(TaskResult).where(TaskResult.task_id == task_id))
        assert task is not None
        session.expunge_all()
        return task, result


def dead_letter(aws: Any, agent_type: str = "validation") -> str:
    """What SQS does after maxReceiveCount receives: the message moves from the queue to its DLQ."""
    queue = aws.get_queue_url(QueueName=f"{PREFIX}-agent-{agent_type}")["QueueUrl"]
    dlq = aws.get_queue_url(QueueName=f"{PREFIX}-agent-{agent_type}-dlq")["QueueUrl"]
    message = aws.receive_message(QueueUrl=queue, MaxNumberOfMessages=1)["Messages"][0]
    aws.send_message(QueueUrl=dlq, MessageBody=message["Body"])
    aws.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
    return str(message["Body"])


def reaper(db: Database, later: timedelta) -> TaskReaper:
    return TaskReaper(db, stuck_grace_seconds=2400, max_run_seconds=6 * 3600, max_queued_seconds=24 * 3600,
                      clock=lambda: utcnow() + later)


def test_a_dead_lettered_task_fails_at_once_and_its_message_stays(api: Api, aws: Any, db: Database,
                                                                   container: Container) -> None:
    # GIVEN a queued task whose message dead-lettered
    api.signup()
    task = create_task(api, api.agent()["id"]).json_body
    dead_letter(aws)
    # WHEN the scheduled reaper runs (as the local runner and EventBridge invoke it)
    totals = EventSourceRunner(aws, PREFIX, [REAPER], wait_seconds=0).invoke_scheduled(REAPER)
    # THEN the task failed with DELIVERY_FAILED, and the message is still in the DLQ for inspection/redrive
    assert totals["dead_lettered"] == 1
    got = api.call("GET", f"/tasks/{task['id']}").json_body
    assert (got["status"], got["error"]["code"]) == ("failed", "DELIVERY_FAILED")
    assert depth(aws, f"{PREFIX}-agent-validation-dlq") == 1
    # ... and sweeping again (the message is seen again) changes nothing
    time.sleep(0.1)
    assert container.dead_letter_sweep.sweep() == 0


def test_a_stuck_processing_task_times_out(api: Api, db: Database, container: Container) -> None:
    # GIVEN a task claimed by a consumer that died (its claim lease passes, no redelivery comes)
    api.signup()
    task = create_task(api, api.agent()["id"]).json_body
    claimed = container.processor.claim_batch([TaskMessage(task_id=task["id"], agent_type="validation")],
                                              utcnow() + timedelta(seconds=60))
    assert claimed
    # WHEN the reaper runs before the grace (a redelivery could still come): nothing moves
    assert reaper(db, timedelta(minutes=20)).reap().timed_out == 0
    # ... and after it
    report = reaper(db, timedelta(minutes=45)).reap()
    # THEN the task timed out with the reason
    assert report.timed_out == 1
    got, result = task_row(db, task["id"])
    assert (got.status, got.error["code"]) == ("timed_out", "TASK_STUCK")
    assert result is not None and result.status == "timed_out"
    # A late finish of the dead claimer's run is discarded
    assert container.processor.claim_batch([TaskMessage(task_id=task["id"], agent_type="validation")],
                                           utcnow()) == {}


def test_a_task_never_delivered_fails_and_external_tasks_are_left_alone(api: Api, db: Database) -> None:
    api.signup()
    managed = create_task(api, api.agent()["id"]).json_body
    worker = api.call("POST", "/agents", {"name": "w", "type": "validation", "mode": "external"})
    assert worker.status_code == 201, worker.json_body
    external = create_task(api, worker.json_body["id"]).json_body
    assert reaper(db, timedelta(hours=23)).reap().failed == 0
    assert reaper(db, timedelta(hours=25)).reap().failed == 1
    got, _ = task_row(db, managed["id"])
    assert (got.status, got.error["code"], got.error["details"]["reason"]) == (
        "failed", "DELIVERY_FAILED", "max_queued_age")
    assert task_row(db, external["id"])[0].status == "queued"  # waits for its worker's lease


def _waiting_step(api: Api, harness: WorkflowHarness) -> tuple[dict[str, Any], Task]:
    """An orchestrator task whose plan's one step task waits `queued` (an external agent's: no worker yet)."""
    api.signup()
    worker = api.call("POST", "/agents", {"name": "worker", "type": "validation", "mode": "external"}).json_body
    boss = api.agent("orchestrator", name="boss")
    parent = start(api, boss, {"goal": "g", "plan": [{"step_id": "a", "agent_id": worker["id"],
                                                       "input_data": OK_SCHEMA}]})
    harness.drive(lambda: "a" in children(harness.db, parent["id"]))
    return parent, children(harness.db, parent["id"])["a"]


def test_a_step_the_reaper_times_out_fails_its_orchestrator_parent(wf_api: Api, harness: WorkflowHarness) -> None:
    # GIVEN an orchestrator whose step task was claimed by a consumer that died (its lease ran out)
    parent, step = _waiting_step(wf_api, harness)
    with harness.db.transaction() as session:
        session.execute(update(Agent).where(Agent.id == step.agent_id).values(mode="managed"))
        session.execute(update(Task).where(Task.id == step.id).values(status="processing", started_at=utcnow(),
                                                                      lease_expires_at=utcnow()))
    # WHEN the reaper sweeps an hour later (past the stuck grace, not past the parent's run time)
    assert reaper(harness.db, timedelta(hours=1)).reap().timed_out == 1
    # THEN the step timed out, its run failed and the parent with it (not `processing` forever)
    got = finish(harness, wf_api, parent["id"])
    assert got["status"] == "failed" and got["error"]["code"] == "SUBTASK_FAILED", got
    assert got["error"]["details"]["status"] == "timed_out"
    assert task_row(harness.db, step.id)[0].status == "timed_out"


def test_a_parent_past_its_run_time_times_out_and_its_run_is_cancelled(wf_api: Api,
                                                                        harness: WorkflowHarness) -> None:
    parent, step = _waiting_step(wf_api, harness)
    # the step waits for 7 hours (max run 6 h; max queued age 24 h)
    report = reaper(harness.db, timedelta(hours=7)).reap()
    assert report.timed_out == 1
    got, _ = task_row(harness.db, parent["id"])
    assert (got.status, got.error["code"]) == ("timed_out", "TASK_RUN_TOO_LONG")
    child, _ = task_row(harness.db, step.id)
    assert (child.status, child.error["code"]) == ("cancelled", "PARENT_FINISHED")
    run = plan_run(harness.db, parent["id"])
    assert run is not None and run.status == "cancelled"
    assert {s.status for s in harness.steps(run.id).values()} == {"cancelled"}


def test_the_reaper_may_read_the_dlqs_but_never_delete() -> None:
    from infra.template import build_template, logical_id

    resources = build_template("test")["Resources"]
    role = resources[logical_id("task-reaper", "Role")]
    statements = [s for s in role["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
                  if isinstance(s, dict) and "Action" in s]
    peek = next(s for s in statements if s["Sid"] == "PeekDeadLetters")
    assert peek["Action"] == ["sqs:GetQueueUrl", "sqs:ReceiveMessage"]
    # the agent DLQs (one per type: its lanes share it), not the ingress one
    assert len(peek["Resource"]) == len(manifest.AGENT_CONSUMERS)
    assert not any("sqs:DeleteMessage" in s["Action"] for s in statements)
    assert logical_id("task-reaper", "ErrorsAlarm") in resources
