"""YMERA event producer: sign a task message and send it to your stage's ingress queue (boto3 only).

    import boto3
    from producer import Producer

    sqs = boto3.client("sqs")
    producer = Producer(sqs, queue_url, key_id=KEY_ID, secret=SECRET)      # from POST /producer-keys
    producer.send_task(agent_type="validation", title="Check order 42",
                       input_data={"data": {"order": 42}}, idempotency_key="order-42")

Each message body is JSON in the format of schemas/ingress/task.v1.json; two string message
attributes carry `ymera-key-id` and `ymera-signature` (hex HMAC-SHA256 of the exact body bytes with
the key's secret). The task is created as the key's owner. Resending with the same
`idempotency_key` never creates a second task, so retry sends freely. A message the platform
refuses (bad signature, invalid, revoked key...) goes to `<prefix>-ingress-dlq` with its reason, and
`GET /audit-logs?event_type=ingress.rejected` shows it to you. docs/producers.md has the details.

    python clients/python/producer.py --queue-url URL --key-id ID --secret SECRET \\
        --agent-type validation --title "hello" --idempotency-key hello-1
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import uuid
from typing import Any

SCHEMA_VERSION = 1


def sign(body: str, secret: str) -> str:
    """hex HMAC-SHA256 of the body's UTF-8 bytes: what the ingress consumer recomputes."""
    return hmac.new(secret.encode(), body.encode("utf-8"), hashlib.sha256).hexdigest()


def task_message(*, title: str, idempotency_key: str, agent_id: str | None = None, agent_type: str | None = None,
                 priority: str = "normal", input_data: dict[str, Any] | None = None,
                 description: str | None = None, correlation_id: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "title": title, "priority": priority,
                               "input_data": input_data or {}, "idempotency_key": idempotency_key}
    for name, value in (("agent_id", agent_id), ("agent_type", agent_type), ("description", description),
                        ("correlation_id", correlation_id)):
        if value is not None:
            message[name] = value
    return message


class Producer:
    def __init__(self, sqs_client: Any, queue_url: str, *, key_id: str, secret: str) -> None:
        self.sqs = sqs_client
        self.queue_url = queue_url
        self.key_id = key_id
        self.secret = secret

    def send_body(self, body: str) -> str:
        """Send an exact body, signed; returns the SQS message id."""
        response = self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body, MessageAttributes={
            "ymera-key-id": {"DataType": "String", "StringValue": self.key_id},
            "ymera-signature": {"DataType": "String", "StringValue": sign(body, self.secret)},
        })
        return str(response["MessageId"])

    def send_task(self, **fields: Any) -> str:
        """`task_message(**fields)` as compact JSON, signed and sent."""
        fields.setdefault("idempotency_key", str(uuid.uuid4()))
        return self.send_body(json.dumps(task_message(**fields), separators=(",", ":")))


def main() -> int:
    import boto3

    parser = argparse.ArgumentParser(description="Send one signed task message to a YMERA ingress queue.")
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--key-id", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--endpoint-url", default=None)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--agent-id")
    target.add_argument("--agent-type")
    parser.add_argument("--title", required=True)
    parser.add_argument("--input", default="{}", help="input_data as JSON")
    parser.add_argument("--idempotency-key", default=None)
    args = parser.parse_args()
    producer = Producer(boto3.client("sqs", endpoint_url=args.endpoint_url), args.queue_url,
                        key_id=args.key_id, secret=args.secret)
    print(producer.send_task(agent_id=args.agent_id, agent_type=args.agent_type, title=args.title,
                             input_data=json.loads(args.input),
                             idempotency_key=args.idempotency_key or str(uuid.uuid4())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
