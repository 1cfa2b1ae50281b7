"""A lean front for moto's three hottest SQS actions in `make run`'s emulator: SendMessageBatch, ReceiveMessage and
DeleteMessageBatch.

Every task costs the emulator a SendMessageBatch (the API's fast-path publish, on the critical path of POST /tasks),
a ReceiveMessage (the runner's long poll) and a DeleteMessageBatch (the runner, after the handler): under 8
concurrent POST /tasks clients moto spent
~2.1 ms of CPU per task, and three quarters of a call went to its web stack (Flask, moto's request parsing and
botocore-model response serialisation), not to the queue (py-spy, issue #14). This WSGI wrapper answers those
actions (AWS JSON 1.0, what boto3 speaks to SQS) by calling the very same moto backend objects moto's own handler
calls — same queues, same messages, same validation, so Step Functions' sqs:sendMessage integrations and every
other action still see one SQS — and writes the JSON reply itself.

Anything it does not handle exactly like moto goes to moto's own path untouched: other actions, a FIFO queue,
message attributes (sent, or a receive asking for them from a queue holding any that are not String or Number),
DelaySeconds, an unknown queue, a malformed body or an out-of-range parameter, and any error the backend raises (it
validates before it changes anything, so moto's path then answers with the proper error). A receive's long poll
waits in moto's backend, as moto's own handler does.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Callable, Iterable
from typing import Any

TARGET_PREFIX = "AmazonSQS."
_ACTIONS = frozenset({"SendMessageBatch", "ReceiveMessage", "DeleteMessageBatch"})
#: the entry keys the fast path understands; an entry with any other key goes to moto's own path.
_SEND_KEYS = frozenset({"Id", "MessageBody", "MessageGroupId"})
_DELETE_KEYS = frozenset({"Id", "ReceiptHandle"})
_RECEIVE_KEYS = frozenset({"QueueUrl", "MaxNumberOfMessages", "WaitTimeSeconds", "VisibilityTimeout",
                           "AttributeNames", "MessageSystemAttributeNames", "MessageAttributeNames"})
#: what moto's SQSResponse.receive_message can put in a message's Attributes, in its order.
_SYSTEM_ATTRIBUTES = ("AWSTraceHeader", "ApproximateFirstReceiveTimestamp", "ApproximateReceiveCount",
                      "MessageDeduplicationId", "MessageGroupId", "SenderId", "SentTimestamp", "SequenceNumber")
_MAX_VISIBILITY = 43200  # moto.sqs.constants.MAXIMUM_VISIBILITY_TIMEOUT
#: SigV4 credential scope: Credential=<key>/<date>/<region>/sqs/aws4_request
_REGION = re.compile(r"Credential=[^/,]+/\d{8}/([a-z0-9-]+)/sqs/aws4_request")
_JSON_HEADERS = [("Content-Type", "application/x-amz-json-1.0")]

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class FastSqsFront:
    """WSGI middleware: `FastSqsFront(moto_app)`. `handled` / `delegated` count what it did (tests, benches)."""

    def __init__(self, app: WsgiApp) -> None:
        from moto.sqs.models import sqs_backends

        self.app = app
        self.backends = sqs_backends
        self.handled = 0
        self.delegated = 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        action = target[len(TARGET_PREFIX):] if target.startswith(TARGET_PREFIX) else ""
        if action in _ACTIONS and environ.get("REQUEST_METHOD") == "POST":
            body = _read_body(environ)
            environ["wsgi.input"] = io.BytesIO(body)  # moto's path can still read it whole
            reply = self._answer(action, body, environ)
            if reply is not None:
                self.handled += 1
                payload = json.dumps(reply, separators=(",", ":")).encode()
                start_response("200 OK", [*_JSON_HEADERS, ("x-amzn-RequestId", str(uuid.uuid4())),
                                          ("Content-Length", str(len(payload)))])
                return [payload]
        self.delegated += 1
        return self.app(environ, start_response)

    def _answer(self, action: str, body: bytes, environ: dict[str, Any]) -> dict[str, Any] | None:
        """The reply, or None for moto's own path (nothing has been changed then)."""
        try:
            params = json.loads(body)
        except ValueError:
            return None
        if not isinstance(params, dict):
            return None
        where = _queue(params.get("QueueUrl"), environ)
        if where is None:
            return None
        if action == "ReceiveMessage":
            if not set(params) <= _RECEIVE_KEYS:
                return None
            entries: Any = None
        else:
            entries = params.get("Entries")
            if not isinstance(entries, list) or not 1 <= len(entries) <= 10 or set(params) != {"QueueUrl", "Entries"}:
                return None
        account, region, name = where
        try:
            backend = self.backends[account][region]
            queue = backend.queues.get(name)
        except Exception:  # noqa: BLE001 - an unknown account or region: moto's path answers with its error
            return None
        if queue is None or queue.fifo_queue:
            return None
        if action == "SendMessageBatch":
            return _send(backend, queue, name, entries)
        if action == "ReceiveMessage":
            return _receive(backend, queue, name, params)
        return _delete(backend, name, entries)


def _send(backend: Any, queue: Any, name: str, entries: list[Any]) -> dict[str, Any] | None:
    if not all(isinstance(e, dict) and set(e) <= _SEND_KEYS and isinstance(e.get("Id"), str)
               and isinstance(e.get("MessageBody"), str) for e in entries):
        return None
    # What moto's SQSResponse.send_message_batch hands its backend, for the entries this path takes.
    batch = {str(i): {**e, "MessageAttributes": {}, "DelaySeconds": None} for i, e in enumerate(entries)}
    try:
        messages, failed = backend.send_message_batch(name, batch)
    except Exception:  # noqa: BLE001 - validation fails before anything is sent: moto's path gives the error
        return None
    return {"Successful": [{"Id": m.user_id, "MessageId": m.id, "MD5OfMessageBody": m.body_md5} for m in messages],
            "Failed": failed}


def _receive(backend: Any, queue: Any, name: str, params: dict[str, Any]) -> dict[str, Any] | None:
    """What moto's SQSResponse.receive_message answers, for a standard queue and in-range parameters."""
    count = _int(params, "MaxNumberOfMessages", 1, 1, 10)
    wait = _int(params, "WaitTimeSeconds", int(queue.receive_message_wait_time_seconds), 0, 20)
    visibility = _int(params, "VisibilityTimeout", int(queue.visibility_timeout), 0, _MAX_VISIBILITY)
    names = [_names(params, key) for key in ("AttributeNames", "MessageSystemAttributeNames", "MessageAttributeNames")]
    if count is None or wait is None or visibility is None or any(n is None for n in names):
        return None
    system, wanted = {*names[0], *names[1]}, names[2]  # type: ignore[misc]
    if wanted and any(not _plain_attributes(m.message_attributes) for m in queue._messages):
        return None  # Binary (or custom) attribute values: moto's serializer encodes them, so its path answers
    try:
        messages = backend.receive_message(name, count, wait, visibility, wanted)
    except Exception:  # noqa: BLE001 - it raises before taking any message: moto's path gives the error
        return None
    include = [a for a in _SYSTEM_ATTRIBUTES if "All" in system or a in system]
    out = []
    for m in messages:
        msg: dict[str, Any] = {"MessageId": m.id, "ReceiptHandle": m.receipt_handle, "MD5OfBody": m.body_md5,
                               "Body": m.body}
        if m.message_attributes:
            msg["MessageAttributes"] = m.message_attributes
            msg["MD5OfMessageAttributes"] = m.attribute_md5
        if include:
            msg["Attributes"] = _system_attributes(m, include)
        out.append(msg)
    return {"Messages": out} if out else {}


def _system_attributes(m: Any, include: list[str]) -> dict[str, str]:
    values: dict[str, Any] = {"SenderId": m.sender_id, "SentTimestamp": str(m.sent_timestamp),
                              "ApproximateReceiveCount": str(m.approximate_receive_count),
                              "ApproximateFirstReceiveTimestamp": str(m.approximate_first_receive_timestamp),
                              "MessageDeduplicationId": m.deduplication_id, "MessageGroupId": m.group_id,
                              "SequenceNumber": m.sequence_number}
    trace = (m.system_attributes or {}).get("AWSTraceHeader")
    values["AWSTraceHeader"] = trace.get("StringValue") if trace else None
    optional = {"MessageDeduplicationId", "MessageGroupId", "AWSTraceHeader", "SequenceNumber"}  # moto skips None
    return {name: values[name] for name in include if name not in optional or values[name] is not None}


def _plain_attributes(attributes: Any) -> bool:
    """Message attributes whose values are all StringValue (String and Number types): JSON as stored."""
    return all(isinstance(v, dict) and set(v) <= {"DataType", "StringValue"} for v in (attributes or {}).values())


def _int(params: dict[str, Any], key: str, default: int, low: int, high: int) -> int | None:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return None
    return value


def _names(params: dict[str, Any], key: str) -> list[str] | None:
    value = params.get(key, [])
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def _delete(backend: Any, name: str, entries: list[Any]) -> dict[str, Any] | None:
    if not all(isinstance(e, dict) and set(e) == _DELETE_KEYS and isinstance(e["Id"], str)
               and isinstance(e["ReceiptHandle"], str) for e in entries):
        return None
    if len({e["ReceiptHandle"] for e in entries}) != len(entries) or len({e["Id"] for e in entries}) != len(entries):
        return None  # moto's path answers BatchEntryIdsNotDistinct
    try:
        success, failed = backend.delete_message_batch(name, entries)
    except Exception:  # noqa: BLE001 - see _send
        return None
    return {"Successful": [{"Id": i} for i in success], "Failed": failed}


def _queue(url: Any, environ: dict[str, Any]) -> tuple[str, str, str] | None:
    """(account, region, queue name) of a moto queue URL http://host:port/<account>/<name>, the region from the
    request's SigV4 credential scope."""
    if not isinstance(url, str):
        return None
    parts = url.split("?", 1)[0].rstrip("/").split("/")
    if len(parts) < 5 or not parts[-2].isdigit():
        return None
    found = _REGION.search(environ.get("HTTP_AUTHORIZATION", ""))
    if found is None:
        return None
    return parts[-2], found.group(1), parts[-1]


def _read_body(environ: dict[str, Any]) -> bytes:
    try:
        size = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        size = 0
    stream = environ.get("wsgi.input")
    return stream.read(size) if stream is not None and size > 0 else b""
