"""infra.local.lean_sqs: the runner's receive, delete and visibility calls to make run's own emulator, answered as
boto3 would have them (same messages, same errors), and the runner driving a batch through it."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from infra.local.emulator import sqs_client, start_moto
from infra.local.lean_sqs import LeanSqs
from infra.local.runner import EventSourceRunner
from infra.manifest import FunctionSpec, QueueSpec
from tests.unit.emulator_support import emulator_env, recorded_spawns

PREFIX = "ymera-lean"
QUEUE = QueueSpec(suffix="agent-validation", visibility_timeout=30, max_receive_count=3)
SPEC = FunctionSpec(name="agent-validation", handler="tests.fake.handler", queue=QUEUE, timeout=60, memory=256)


@pytest.fixture(scope="module")
def clients() -> Iterator[tuple[LeanSqs, Any]]:
    """(lean client, its boto3 client) on one emulator with make run's SQS front."""
    with emulator_env():
        endpoint = start_moto(fast_sqs=True)
        try:
            boto = sqs_client(endpoint.url)
            yield LeanSqs(boto), boto
        finally:
            endpoint.stop()


def _queue(boto: Any, name: str) -> str:
    return str(boto.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "30"})["QueueUrl"])


def _receive(client: Any, url: str) -> list[dict[str, Any]]:
    return list(client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                       AttributeNames=["All"], MessageAttributeNames=["All"]).get("Messages", []))


def test_a_received_message_is_what_boto3_receives_and_a_delete_removes_it(clients: tuple[LeanSqs, Any]) -> None:
    lean, boto = clients
    url = _queue(boto, "lean-receive")
    boto.send_message(QueueUrl=url, MessageBody='{"task_id": "é"}')
    [message] = _receive(lean, url)
    assert message["Body"] == '{"task_id": "é"}'
    assert message["Attributes"]["ApproximateReceiveCount"] == "1"
    assert set(message) >= {"MessageId", "ReceiptHandle", "MD5OfBody", "Attributes"}
    boto.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
    [again] = _receive(boto, url)  # boto3 sees the same message, received once more
    assert again["MessageId"] == message["MessageId"] and again["Attributes"]["ApproximateReceiveCount"] == "2"
    answer = lean.delete_message_batch(QueueUrl=url, Entries=[{"Id": "0", "ReceiptHandle": again["ReceiptHandle"]}])
    assert [e["Id"] for e in answer["Successful"]] == ["0"] and not answer.get("Failed")
    assert lean.get_queue_url(QueueName="lean-receive")["QueueUrl"] == url  # not a lean action: boto3's
    assert boto.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                     "ApproximateNumberOfMessagesNotVisible"])["Attributes"] == {
        "ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}


def test_a_visibility_change_gives_messages_back(clients: tuple[LeanSqs, Any]) -> None:
    lean, boto = clients
    url = _queue(boto, "lean-visibility")
    for i in range(2):
        boto.send_message(QueueUrl=url, MessageBody=str(i))
    got = _receive(lean, url)
    assert sorted(m["Body"] for m in got) == ["0", "1"] and _receive(lean, url) == []
    answer = lean.change_message_visibility_batch(QueueUrl=url, Entries=[
        {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0} for n, m in enumerate(got)])
    assert len(answer["Successful"]) == 2
    assert sorted(m["Body"] for m in _receive(lean, url)) == ["0", "1"]


def test_errors_are_the_ones_boto3_raises(clients: tuple[LeanSqs, Any]) -> None:
    lean, boto = clients
    url = _queue(boto, "lean-errors")
    for client in (boto, lean):
        with pytest.raises(boto.exceptions.QueueDoesNotExist) as gone:
            _receive(client, url + "-missing")
        assert gone.value.response["Error"]["Code"] == "AWS.SimpleQueueService.NonExistentQueue"
        with pytest.raises(boto.exceptions.EmptyBatchRequest) as empty:
            client.delete_message_batch(QueueUrl=url, Entries=[])
        assert empty.value.response["Error"]["Code"] == "AWS.SimpleQueueService.EmptyBatchRequest"
        assert empty.value.operation_name == "DeleteMessageBatch"


def test_a_dropped_connection_is_reopened_and_the_call_sent_again(clients: tuple[LeanSqs, Any]) -> None:
    lean, boto = clients
    url = _queue(boto, "lean-reconnect")
    boto.send_message(QueueUrl=url, MessageBody="kept")
    with socket.socket() as closed:  # a port nothing listens on: the first attempt is refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    lean._json._local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    assert [m["Body"] for m in _receive(lean, url)] == ["kept"]


def test_the_runner_drives_a_partial_batch_through_the_lean_client(clients: tuple[LeanSqs, Any]) -> None:
    lean, boto = clients
    dlq = boto.create_queue(QueueName=QUEUE.dlq_name(PREFIX))["QueueUrl"]
    dlq_arn = boto.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = boto.create_queue(QueueName=QUEUE.name(PREFIX), Attributes={
        "VisibilityTimeout": "30", "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn,
                                                                "maxReceiveCount": "3"})})["QueueUrl"]
    for i in range(3):
        boto.send_message(QueueUrl=url, MessageBody=json.dumps({"task_id": f"t{i}"}))
    seen: list[dict[str, Any]] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.extend(event["Records"])
        failed = next(r for r in event["Records"] if json.loads(r["body"])["task_id"] == "t1")
        return {"batchItemFailures": [{"itemIdentifier": failed["messageId"]}]}

    runner = EventSourceRunner(lean, PREFIX, [SPEC], handler_resolver=lambda dotted: handler, wait_seconds=0)
    assert runner.poll_once(SPEC) == 3
    assert {json.loads(r["body"])["task_id"] for r in seen} == {"t0", "t1", "t2"}
    assert all(r["eventSourceARN"].endswith(QUEUE.name(PREFIX)) for r in seen)
    # Only the failed record is left, in flight until its visibility timeout.
    attributes = boto.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "1"


@pytest.mark.parametrize(("lean", "switch", "expected"), [(True, None, True), (True, "0", False), (False, None, False)])
def test_the_functions_child_is_told_to_go_lean_only_for_its_own_emulator(monkeypatch: pytest.MonkeyPatch, lean: bool,
                                                                          switch: str | None, expected: bool) -> None:
    from infra.local import functions

    started = recorded_spawns(monkeypatch)
    if switch is None:
        monkeypatch.delenv("YMERA_LOCAL_LEAN_SQS", raising=False)
    else:
        monkeypatch.setenv("YMERA_LOCAL_LEAN_SQS", switch)
    functions.spawn_functions(lean_sqs=lean)
    assert ("--lean-sqs" in started[0]) is expected
