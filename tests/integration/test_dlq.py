"""A malformed message on a real (moto) queue is retried, then lands in the DLQ; good ones still complete.

The local runner drives the real consumer with Lambda-shaped events; the queue's
own RedrivePolicy (maxReceiveCount 5) moves the poison message, as on AWS.
"""

from __future__ import annotations

import time
from typing import Any

from infra import manifest
from infra.local.runner import EventSourceRunner
from tests.integration.conftest import PREFIX, Api
from tests.integration.test_api_tasks import create_task


def depth(sqs: Any, name: str) -> int:
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                                                  "ApproximateNumberOfMessagesNotVisible"])
    return sum(int(v) for v in attrs["Attributes"].values())


def test_poison_message_ends_in_the_dlq_and_the_good_task_completes(api: Api, aws: Any) -> None:
    api.signup()
    task = create_task(api, api.agent()["id"]).json_body  # published to the validation queue
    queue = f"{PREFIX}-agent-validation"
    aws.send_message(QueueUrl=aws.get_queue_url(QueueName=queue)["QueueUrl"], MessageBody="{this is not json")

    spec = next(s for s in manifest.functions() if s.name == "agent-validation")
    runner = EventSourceRunner(aws, PREFIX, [spec], wait_seconds=0)
    deadline = time.monotonic() + 30
    while depth(aws, f"{queue}-dlq") == 0 and time.monotonic() < deadline:
        runner.poll_once(spec)
        time.sleep(0.3)  # the test queues have a 1 s visibility timeout

    assert depth(aws, f"{queue}-dlq") == 1
    assert depth(aws, queue) == 0
    dlq_url = aws.get_queue_url(QueueName=f"{queue}-dlq")["QueueUrl"]
    poisoned = aws.receive_message(QueueUrl=dlq_url, AttributeNames=["All"])["Messages"][0]
    assert poisoned["Body"] == "{this is not json"
    assert int(poisoned["Attributes"]["ApproximateReceiveCount"]) >= manifest.MAX_RECEIVE_COUNT
    assert api.call("GET", f"/tasks/{task['id']}").json_body["status"] == "completed"
