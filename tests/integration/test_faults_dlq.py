"""DLQ operations for admins: GET /admin/dlq peeks without consuming; POST /admin/dlq/{queue}/redrive moves
messages back (receive/send/delete on moto, which has no StartMessageMoveTask; the move-task path with a client
that has it), and redriven messages of finished tasks are no-ops when consumed."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from chalicelib.db.models import AuditLog, TaskResult
from chalicelib.messaging.dlq import DlqOperator
from infra import manifest
from infra.local.runner import EventSourceRunner
from tests.integration.conftest import PREFIX, Api
from tests.integration.test_api_tasks import create_task
from tests.integration.test_cache_api import make_admin
from tests.integration.test_consumer import message, run
from tests.integration.test_dlq import depth

QUEUE = f"{PREFIX}-agent-validation"


def _dead_letter(aws: Any, body: str) -> None:
    aws.send_message(QueueUrl=aws.get_queue_url(QueueName=f"{QUEUE}-dlq")["QueueUrl"], MessageBody=body)


def test_admin_sees_depth_and_a_sample_with_task_and_last_error_without_consuming(api: Api, other_api: Api,
                                                                                  db: Any, aws: Any) -> None:
    api.signup()
    agent = api.agent()
    failed = create_task(api, agent["id"], input_data={"schema": {"type": "nonsense"}, "payload": 1}).json_body
    assert run([("m1", message(failed["id"]))]) == {"batchItemFailures": []}  # fails: AGENT_INPUT_INVALID
    _dead_letter(aws, message(failed["id"]))
    _dead_letter(aws, "{not json")
    make_admin(other_api, db)
    for _ in range(2):  # looking twice changes nothing
        r = other_api.call("GET", "/admin/dlq?sample=10")
        assert r.status_code == 200, r.json_body
        validation = next(q for q in r.json_body["queues"] if q["queue"] == "validation")
        assert validation["depth"] == 2 and validation["dlq"] == f"{QUEUE}-dlq"
        by_task = {m["task_id"]: m for m in validation["messages"]}
        assert set(by_task) == {failed["id"], None}
        assert by_task[failed["id"]]["task_status"] == "failed"
        assert by_task[failed["id"]]["last_error"]["code"] == "AGENT_INPUT_INVALID"
        assert by_task[None]["body_preview"] == "{not json"
    assert depth(aws, f"{QUEUE}-dlq") == 2
    # Not for users.
    r = api.call("GET", "/admin/dlq")
    assert r.status_code == 403 and r.json_body["error"]["code"] == "AUTHORIZATION_ERROR"


def test_redrive_moves_messages_back_audits_and_finished_tasks_are_no_ops(api: Api, other_api: Api, db: Any,
                                                                         aws: Any) -> None:
    api.signup()
    agent = api.agent()
    done = create_task(api, agent["id"]).json_body
    waiting = create_task(api, agent["id"]).json_body
    main_url = aws.get_queue_url(QueueName=QUEUE)["QueueUrl"]
    aws.purge_queue(QueueUrl=main_url)  # the tasks' own messages: we stand in for their dead-lettering
    assert run([("m1", message(done["id"]))]) == {"batchItemFailures": []}
    for task in (done, waiting):
        _dead_letter(aws, message(task["id"]))
    make_admin(other_api, db)
    assert api.call("POST", "/admin/dlq/validation/redrive").status_code == 403
    assert other_api.call("POST", "/admin/dlq/nonexistent/redrive").status_code == 404

    r = other_api.call("POST", "/admin/dlq/validation/redrive", {"limit": 10})
    assert r.status_code == 200, r.json_body
    assert r.json_body == {"queue": "validation", "method": "receive_send_delete", "moved": 2,
                           "approximate": None, "task_handle": None}
    assert depth(aws, f"{QUEUE}-dlq") == 0 and depth(aws, QUEUE) == 2
    with db.read() as session:
        row = session.scalar(select(AuditLog).where(AuditLog.event_type == "admin.dlq_redriven"))
        assert row is not None and row.resource_id == "validation" and row.details["moved"] == 2

    spec = next(s for s in manifest.functions() if s.name == "agent-validation")
    runner = EventSourceRunner(aws, PREFIX, [spec], wait_seconds=0)
    while runner.poll_once(spec):
        pass
    assert depth(aws, QUEUE) == 0
    got = {t: api.call("GET", f"/tasks/{t}").json_body for t in (done["id"], waiting["id"])}
    assert got[done["id"]]["attempts"] == 1  # the finished one was not run again
    assert got[waiting["id"]]["status"] == "completed"
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(TaskResult)) == 2


class MoveTaskClient:
    """An SQS endpoint that has StartMessageMoveTask (real SQS): the operator must use it, not move by hand."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def get_queue_url(self, QueueName: str) -> dict[str, str]:  # noqa: N803 - boto3's spelling
        return {"QueueUrl": f"https://sqs.local/{QueueName}"}

    def get_queue_attributes(self, QueueUrl: str, AttributeNames: list[str]) -> dict[str, Any]:  # noqa: N803
        name = QueueUrl.rsplit("/", 1)[1]
        return {"Attributes": {"QueueArn": f"arn:aws:sqs:us-east-1:1:{name}", "ApproximateNumberOfMessages": "7"}}

    def start_message_move_task(self, **kwargs: Any) -> dict[str, str]:
        self.calls.append(("start_message_move_task", kwargs))
        return {"TaskHandle": "handle-1"}

    def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        raise AssertionError("moved by hand although the endpoint has StartMessageMoveTask")


def test_redrive_uses_start_message_move_task_where_the_endpoint_has_it() -> None:
    client = MoveTaskClient()
    outcome = DlqOperator(lambda: client, "ymera-x").redrive("validation", 100)
    assert (outcome.method, outcome.moved, outcome.approximate, outcome.task_handle) == (
        "move_task", None, 7, "handle-1")
    assert client.calls == [("start_message_move_task", {
        "SourceArn": "arn:aws:sqs:us-east-1:1:ymera-x-agent-validation-dlq",
        "DestinationArn": "arn:aws:sqs:us-east-1:1:ymera-x-agent-validation"})]
