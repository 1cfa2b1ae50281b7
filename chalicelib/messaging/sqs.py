"""Publishing task messages to the per-agent-type SQS queues."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Protocol


class Publisher(Protocol):
    def publish(self, destination: str, messages: Sequence[tuple[str, dict[str, Any]]]) -> set[str]:
        """Send (id, body) pairs to a destination; return the ids that failed."""
        ...


def queue_name(prefix: str, agent_type: str) -> str:
    return f"{prefix}-agent-{agent_type}"


class QueueClient:
    """An SQS client built on first use, and queue URLs looked up once per container."""

    def __init__(self, client_factory: Callable[[], Any], prefix: str) -> None:
        self._client_factory = client_factory
        self._client: Any = None
        self.prefix = prefix
        self._urls: dict[str, str] = {}

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def url_of(self, name: str) -> str:
        """The URL of a queue by its full name."""
        url = self._urls.get(name)
        if url is None:
            url = self._urls[name] = self.client.get_queue_url(QueueName=name)["QueueUrl"]
        return url

    def queue_url(self, destination: str) -> str:
        """The URL of an agent type's queue."""
        return self.url_of(queue_name(self.prefix, destination))


class SqsPublisher(QueueClient):
    """Sends in batches of 10."""

    def publish(self, destination: str, messages: Sequence[tuple[str, dict[str, Any]]]) -> set[str]:
        url = self.queue_url(destination)
        failed: set[str] = set()
        for start in range(0, len(messages), 10):
            chunk = messages[start:start + 10]
            response = self.client.send_message_batch(
                QueueUrl=url,
                Entries=[{"Id": msg_id, "MessageBody": json.dumps(body)} for msg_id, body in chunk],
            )
            failed.update(entry["Id"] for entry in response.get("Failed", []))
        return failed


def make_sqs_client(region: str, endpoint_url: str | None, timeout: float) -> Any:
    """A client that gives up fast: a publish that cannot happen now is retried by the relay."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 2, "mode": "standard"})
    return boto3.client("sqs", region_name=region, endpoint_url=endpoint_url, config=config)
