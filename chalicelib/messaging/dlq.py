"""Dead-letter queues of the agent queues: look without consuming, and move messages back.

Peeking receives with `VisibilityTimeout=0` and never deletes, so a look changes nothing but the messages'
receive counts (which a DLQ has no redrive policy on). Redrive prefers SQS's own `StartMessageMoveTask`
(asynchronous, server side); where the endpoint does not support it (moto, older emulators) it falls back to
receive → send to the source queue → delete, which is synchronous and says exactly how many moved. A message
is deleted from the DLQ only after its copy was accepted by the source queue, so a failure mid-way can
duplicate a message, never lose one — and duplicates are absorbed by the consumer's claim (a task already
finished is not claimable).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from chalicelib.messaging.inspection import dlq_name
from chalicelib.messaging.sqs import QueueClient, queue_name
from chalicelib.observability import logger

#: SQS answers per ReceiveMessage/SendMessageBatch/DeleteMessageBatch call.
SQS_BATCH = 10
#: a message taken for redrive is hidden this long; one that failed to move reappears after it.
REDRIVE_VISIBILITY_SECONDS = 30
#: error codes meaning "this endpoint has no message move tasks": use the fallback.
_UNSUPPORTED = {"UnsupportedOperation", "InvalidAction", "NotImplemented", "UnknownOperationException",
                "InternalFailure", "InternalError"}


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    task_id: uuid.UUID | None  # None when the body is not a task message (a poison message)
    receive_count: int
    sent_at: datetime | None
    body_preview: str


@dataclass(frozen=True)
class DlqPeek:
    agent_type: str
    queue: str
    dlq: str
    depth: int | None = None
    messages: list[DeadLetter] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class RedriveOutcome:
    method: str  # "move_task" (SQS moves them asynchronously) | "receive_send_delete"
    moved: int | None  # exact for receive_send_delete; None for move_task (see `approximate`)
    approximate: int | None = None  # DLQ depth when a move task was started
    task_handle: str | None = None


def _task_id(body: str) -> uuid.UUID | None:
    try:
        data = json.loads(body)
        return uuid.UUID(str(data["task_id"])) if isinstance(data, dict) and "task_id" in data else None
    except (ValueError, TypeError, KeyError):
        return None


def _sent_at(attributes: dict[str, str]) -> datetime | None:
    raw = attributes.get("SentTimestamp")
    return datetime.fromtimestamp(int(raw) / 1000, tz=timezone.utc) if raw and raw.isdigit() else None


class DlqOperator(QueueClient):
    def _arn(self, url: str) -> str:
        return str(self.client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
                   ["Attributes"]["QueueArn"])

    def _depth(self, url: str) -> int:
        attrs = self.client.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(attrs["Attributes"].get("ApproximateNumberOfMessages", 0))

    def peek(self, agent_type: str, sample: int) -> DlqPeek:
        """Depth and up to `sample` messages of one agent queue's DLQ; nothing is consumed or deleted."""
        main, dlq = queue_name(self.prefix, agent_type), dlq_name(self.prefix, agent_type)
        try:
            url = self.url_of(dlq)
            depth = self._depth(url)
            seen: dict[str, DeadLetter] = {}
            rounds = -(-sample // SQS_BATCH) if sample and depth else 0
            for _ in range(rounds):
                got = self.client.receive_message(QueueUrl=url, MaxNumberOfMessages=min(SQS_BATCH, sample),
                                                  VisibilityTimeout=0, WaitTimeSeconds=0,
                                                  AttributeNames=["ApproximateReceiveCount", "SentTimestamp"])
                before = len(seen)
                for m in got.get("Messages") or []:
                    attrs = m.get("Attributes") or {}
                    seen.setdefault(m["MessageId"], DeadLetter(
                        m["MessageId"], _task_id(m.get("Body", "")), int(attrs.get("ApproximateReceiveCount", 0)),
                        _sent_at(attrs), m.get("Body", "")[:200]))
                if len(seen) >= sample or len(seen) == before:  # enough, or SQS keeps showing the same ones
                    break
        except Exception as exc:  # noqa: BLE001 - one unreadable queue is reported, not raised (like inspection)
            logger.warning("cannot read dead-letter queue", extra={"queue": dlq, "error": repr(exc)})
            return DlqPeek(agent_type, main, dlq, error=type(exc).__name__)
        return DlqPeek(agent_type, main, dlq, depth, list(seen.values())[:sample])

    def redrive(self, agent_type: str, limit: int) -> RedriveOutcome:
        """Move up to `limit` messages (move task: all of them) from the DLQ back to the agent queue: its fast
        lane, whichever lane a message dead-lettered from (the lanes share the DLQ; docs/scheduling.md)."""
        dlq_url = self.url_of(dlq_name(self.prefix, agent_type))
        main_url = self.url_of(queue_name(self.prefix, agent_type))
        handle = self._start_move_task(dlq_url, main_url)
        if handle is not None:
            return RedriveOutcome("move_task", None, approximate=self._depth(dlq_url), task_handle=handle)
        return RedriveOutcome("receive_send_delete", self._move_by_hand(dlq_url, main_url, limit))

    def _start_move_task(self, dlq_url: str, main_url: str) -> str | None:
        from botocore.exceptions import ClientError

        try:
            response = self.client.start_message_move_task(SourceArn=self._arn(dlq_url),
                                                           DestinationArn=self._arn(main_url))
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code not in _UNSUPPORTED:
                raise
            logger.info("StartMessageMoveTask unsupported here; moving messages by hand", extra={"code": code})
            return None
        except NotImplementedError:  # an in-process emulator without the operation
            return None
        return str(response.get("TaskHandle", ""))

    def _move_by_hand(self, dlq_url: str, main_url: str, limit: int) -> int:
        moved = 0
        while moved < limit:
            got = self.client.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=min(SQS_BATCH, limit - moved),
                                              VisibilityTimeout=REDRIVE_VISIBILITY_SECONDS, WaitTimeSeconds=0,
                                              MessageAttributeNames=["All"])
            messages: list[dict[str, Any]] = got.get("Messages") or []
            if not messages:
                break
            sent = self.client.send_message_batch(QueueUrl=main_url, Entries=[
                {"Id": str(i), "MessageBody": m["Body"],
                 **({"MessageAttributes": m["MessageAttributes"]} if m.get("MessageAttributes") else {})}
                for i, m in enumerate(messages)])
            ok = [messages[int(entry["Id"])] for entry in sent.get("Successful") or []]
            if ok:  # only what the source queue accepted leaves the DLQ (a failure duplicates, never loses)
                self.client.delete_message_batch(QueueUrl=dlq_url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(ok)])
            moved += len(ok)
            if len(ok) < len(messages):
                logger.warning("some dead letters could not be sent back; they stay in the DLQ",
                               extra={"failed": len(messages) - len(ok)})
                break
        return moved
