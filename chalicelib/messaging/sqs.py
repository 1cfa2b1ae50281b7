"""Publishing task messages to the per-agent-type SQS queues."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

from chalicelib.domain.lanes import MESSAGE_GROUP
from chalicelib.messaging.sqs_json import SqsJson, SqsJsonError


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


def _entry(msg_id: str, body: dict[str, Any]) -> dict[str, Any]:
    entry = {"Id": msg_id, "MessageBody": json.dumps(body)}
    group = body.get(MESSAGE_GROUP)
    if group:  # a bulk-lane task's owner: SQS fair queues balance delivery between owners (docs/scheduling.md)
        entry["MessageGroupId"] = str(group)
    return entry


#: `YMERA_SQS_LEAN_SEND`: when `SendMessageBatch` goes out as a plain signed request (`sqs_json`) instead of
#: through botocore: "auto" (to a plain-HTTP endpoint only: make run's emulator, LocalStack), "on" (AWS too),
#: "off" (never).
LEAN_SEND_MODES = ("auto", "on", "off")


class SqsPublisher(QueueClient):
    """Sends in batches of 10.

    `lean_send` (LEAN_SEND_MODES): a batch goes out through `chalicelib.messaging.sqs_json` (a fifth of
    botocore's CPU per call), with the boto3 client as its fallback: a lean call that fails is sent again through
    boto3, and if boto3 then succeeds, the lean path was what failed and boto3 sends everything from then on (a
    warning says so). A failure both share (the queue is gone, the endpoint is down) raises boto3's error."""

    def __init__(self, client_factory: Callable[[], Any], prefix: str, *, lean_send: str = "off",
                 timeout: float = 2.0) -> None:
        if lean_send not in LEAN_SEND_MODES:
            raise ValueError(f"lean_send is one of {LEAN_SEND_MODES}, not {lean_send!r}")
        super().__init__(client_factory, prefix)
        self.lean_send = lean_send
        self._timeout = timeout
        self._lean: SqsJson | None = None
        self._lean_decided = False

    def publish(self, destination: str, messages: Sequence[tuple[str, dict[str, Any]]]) -> set[str]:
        url = self.queue_url(destination)
        failed: set[str] = set()
        for start in range(0, len(messages), 10):
            chunk = messages[start:start + 10]
            response = self._send_batch(url, [_entry(msg_id, body) for msg_id, body in chunk])
            failed.update(entry["Id"] for entry in response.get("Failed", []))
        return failed

    def lean(self) -> SqsJson | None:
        """The lean sender, built on first use (None: boto3 sends)."""
        if not self._lean_decided:
            client = self.client
            scheme = urlsplit(client.meta.endpoint_url or "").scheme
            if self.lean_send == "on" or (self.lean_send == "auto" and scheme == "http"):
                try:
                    self._lean = SqsJson.beside(client, self._timeout)
                except ValueError as exc:  # no credentials yet: boto3 raises its own error for that
                    from chalicelib.observability import logger

                    logger.warning("lean SQS send unavailable; boto3 sends", extra={"error": str(exc)})
            self._lean_decided = True
        return self._lean

    def _send_batch(self, url: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
        lean = self.lean()
        if lean is None:
            return self.client.send_message_batch(QueueUrl=url, Entries=entries)  # type: ignore[no-any-return]
        try:
            return lean.call("SendMessageBatch", {"QueueUrl": url, "Entries": entries})
        except (SqsJsonError, OSError, http.client.HTTPException, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        response = self.client.send_message_batch(QueueUrl=url, Entries=entries)  # raises what both share
        from chalicelib.observability import logger

        logger.warning("lean SQS send failed where boto3's succeeded; boto3 sends from now on",
                       extra={"error": error})
        self._lean = None
        return response  # type: ignore[no-any-return]


class VisibilityPort(Protocol):
    """What a consumer needs of its own queue: bring one received message back after `seconds`."""

    def delay(self, queue_arn: str, receipt_handle: str, seconds: int) -> bool:
        """Return whether SQS accepted it (the message otherwise returns after the queue's visibility timeout)."""
        ...


#: SQS refuses a visibility timeout over 12 hours.
MAX_VISIBILITY_SECONDS = 12 * 3600


class SqsVisibility(QueueClient):
    """ChangeMessageVisibility on the queue a record came from (its eventSourceARN names it)."""

    def delay(self, queue_arn: str, receipt_handle: str, seconds: int) -> bool:
        from chalicelib.observability import logger

        try:
            self.client.change_message_visibility(QueueUrl=self.url_of(queue_arn.rsplit(":", 1)[-1]),
                                                  ReceiptHandle=receipt_handle,
                                                  VisibilityTimeout=max(0, min(int(seconds), MAX_VISIBILITY_SECONDS)))
        except Exception:  # noqa: BLE001 - best effort: the queue's own visibility timeout still brings it back
            logger.warning("could not change a message's visibility", exc_info=True)
            return False
        return True


class SqsDeadLetters(QueueClient):
    """Peeks at the agent DLQs: receives without deleting, hiding each message only `hide_seconds`
    (long enough for one sweep not to read it twice). Nothing here may delete: the DLQ is the evidence."""

    def __init__(self, client_factory: Callable[[], Any], prefix: str, hide_seconds: int = 20) -> None:
        super().__init__(client_factory, prefix)
        self.hide_seconds = hide_seconds

    def peek(self, agent_type: str, max_messages: int) -> list[str]:
        url = self.url_of(f"{queue_name(self.prefix, agent_type)}-dlq")
        bodies: list[str] = []
        while len(bodies) < max_messages:
            got = self.client.receive_message(QueueUrl=url, MaxNumberOfMessages=min(10, max_messages - len(bodies)),
                                              VisibilityTimeout=self.hide_seconds,
                                              WaitTimeSeconds=0).get("Messages", [])
            if not got:
                break
            bodies.extend(m["Body"] for m in got)
        return bodies


def make_sqs_client(region: str, endpoint_url: str | None, timeout: float) -> Any:
    """A client that gives up fast: a publish that cannot happen now is retried by the relay."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 2, "mode": "standard"})
    return boto3.client("sqs", region_name=region, endpoint_url=endpoint_url, config=config)
