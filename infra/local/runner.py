"""Event-source runner: what Lambda's SQS event source mapping and EventBridge do.

One thread per queue long-polls it (20 s, as Lambda's pollers do) and invokes the
mapped handler in-process with a real Lambda-shaped SQS event, gathering records for
up to the function's batching window (MaximumBatchingWindowInSeconds) when it has one;
only records the handler does not report in `batchItemFailures` are deleted, so
visibility timeouts, receive counts and DLQ redrive (the queue's own RedrivePolicy)
behave as on AWS. One thread per scheduled function invokes it with an EventBridge
scheduled event.

Ctrl-C: `stop()` waits for the handlers that are running, not for a long poll (a poller
that is only waiting for messages is left to its daemon thread; whatever its receive
still brings after the stop is not handled: it is given back (visibility 0) if the process
is still there to do it, else it reappears after its visibility timeout, as when Lambda's
poller goes away).
"""

from __future__ import annotations

import base64
import functools
import importlib
import logging
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from infra.manifest import FunctionSpec

log = logging.getLogger("infra.local.runner")

Handler = Callable[[dict[str, Any], Any], Any]
HandlerResolver = Callable[[str], Handler]

DEFAULT_ACCOUNT = "123456789012"  # moto's and LocalStack's default account
#: SQS's long-poll maximum, what Lambda's pollers use: an idle queue costs one ReceiveMessage per 20 s, not one a
#: second per poller (13 pollers at 1 s were ~13 requests/s to the emulator, a new connection each, all idle).
MAX_WAIT_SECONDS = 20
SQS_MAX_BATCH = 10  # ReceiveMessage / DeleteMessageBatch hard limit
#: inside a batching window shorter than a second (ReceiveMessage waits whole seconds): short polls this far apart.
WINDOW_POLL_SECONDS = 0.05


def pool_size_for(specs: Iterable[FunctionSpec]) -> int:
    """HTTP connections the runner's SQS client needs: one per poller thread, plus headroom
    for its deletes and the main thread (never below botocore's default of 10)."""
    return max(10, sum(1 for spec in specs if spec.queue is not None) + 4)


class LambdaContext:
    """The attributes handlers (and Powertools) read from a Lambda context."""

    def __init__(self, function_name: str, timeout_s: int, memory_mb: int, region: str,
                 account: str, stopping: threading.Event | None = None) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{account}:function:{function_name}"
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = f"local/{self.aws_request_id}"
        self._deadline = time.monotonic() + timeout_s
        self._stopping = stopping

    def get_remaining_time_in_millis(self) -> int:
        # Ctrl-C: no time left, so a handler that loops while time remains (the notifier) returns now.
        if self._stopping is not None and self._stopping.is_set():
            return 0
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def import_handler(dotted: str) -> Handler:
    """'functions.agent_consumer.handler' -> the callable (cached by importlib)."""
    module_name, _, attr = dotted.rpartition(".")
    handler = getattr(importlib.import_module(module_name), attr)
    if not callable(handler):
        raise TypeError(f"{dotted} is not callable")
    return handler  # type: ignore[no-any-return]


def _lambda_message_attributes(attrs: dict[str, Any]) -> dict[str, Any]:
    """SQS API shape (StringValue, bytes BinaryValue) -> Lambda event shape (camelCase, base64)."""
    out: dict[str, Any] = {}
    for name, a in attrs.items():
        item: dict[str, Any] = {"stringListValues": [], "binaryListValues": [],
                                "dataType": a.get("DataType", "String")}
        if "StringValue" in a:
            item["stringValue"] = a["StringValue"]
        if "BinaryValue" in a:
            item["binaryValue"] = base64.b64encode(a["BinaryValue"]).decode("ascii")
        out[name] = item
    return out


def sqs_event(messages: Iterable[dict[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    """Build the event Lambda hands an SQS-triggered function."""
    records = []
    for m in messages:
        attrs = dict(m.get("Attributes") or {})
        for key in ("ApproximateReceiveCount", "SentTimestamp", "SenderId",
                    "ApproximateFirstReceiveTimestamp"):
            attrs.setdefault(key, "")
        records.append({
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m.get("Body", ""),
            "attributes": attrs,
            "messageAttributes": _lambda_message_attributes(m.get("MessageAttributes") or {}),
            "md5OfBody": m.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": region,
        })
    return {"Records": records}


def rate_minutes(expression: str) -> float:
    """`rate(5 minutes)` -> 5, `rate(30 seconds)` -> 0.5; anything else (cron) counts as 1."""
    match = re.fullmatch(r"rate\((\d+) (second|minute|hour|day)s?\)", expression.strip())
    if not match:
        return 1.0
    per_unit = {"second": 1 / 60, "minute": 1.0, "hour": 60.0, "day": 1440.0}[match.group(2)]
    return max(int(match.group(1)) * per_unit, 0.1)


def scheduled_event(rule_name: str, region: str, account: str) -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:{account}:rule/{rule_name}"],
        "detail": {},
    }


class EventSourceRunner:
    def __init__(self, sqs_client: Any, prefix: str, specs: Iterable[FunctionSpec],
                 handler_resolver: HandlerResolver | None = None, *,
                 schedule_seconds: float | None = None,
                 wait_seconds: int = MAX_WAIT_SECONDS) -> None:
        self.sqs = sqs_client
        self.prefix = prefix
        self.specs = list(specs)
        self.region: str = sqs_client.meta.region_name or "us-east-1"
        self._resolve = handler_resolver or import_handler
        self.schedule_seconds = schedule_seconds if schedule_seconds is not None else \
            float(os.environ.get("YMERA_LOCAL_SCHEDULE_SECONDS", "2"))
        self.wait_seconds = max(0, min(wait_seconds, MAX_WAIT_SECONDS))
        self.stop_event = threading.Event()
        self._threads: list[threading.Thread] = []
        #: threads inside a handler (or a delete after it) right now: what stop() waits for.
        self._busy: set[threading.Thread] = set()
        #: the queues' poller threads (the others run schedules)
        self._pollers: set[threading.Thread] = set()
        self._busy_lock = threading.Lock()
        self._queues: dict[str, tuple[str, str]] = {}  # spec.name -> (url, arn)

    # -- one unit of work (used by the threads and directly by tests) ---------

    def queue(self, spec: FunctionSpec) -> tuple[str, str]:
        """(queue URL, queue ARN) of the spec's queue, looked up once."""
        if spec.name not in self._queues:
            assert spec.queue is not None, f"{spec.name} has no queue"
            url = self.sqs.get_queue_url(QueueName=spec.queue.name(self.prefix))["QueueUrl"]
            arn = self.sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            self._queues[spec.name] = (url, arn)
        return self._queues[spec.name]

    def _context(self, spec: FunctionSpec, account: str = DEFAULT_ACCOUNT,
                 stopping: threading.Event | None = None) -> LambdaContext:
        return LambdaContext(f"{self.prefix}-{spec.name}", spec.timeout, spec.memory,
                             self.region, account, stopping=stopping or self.stop_event)

    def poll_once(self, spec: FunctionSpec, wait_seconds: int | None = None, *,
                  stopping: threading.Event | None = None) -> int:
        """Receive one batch (within the spec's batching window), invoke the handler, delete what succeeded;
        returns #records. `stopping`: the stop event of the `start()` whose poller this is (a poller stopped
        while in a long poll gives back what that poll brings, even once the runner has been started again)."""
        stopping = stopping or self.stop_event
        url, arn = self.queue(spec)
        messages = self._receive_batch(spec, url, self.wait_seconds if wait_seconds is None else wait_seconds,
                                       stopping)
        if not messages:
            return 0
        with self._busy_lock:  # busy first, then the stop check: stop() either waits for this or it sees the stop
            self._busy.add(threading.current_thread())
        try:
            if stopping.is_set():
                # Stopping: not handled, not deleted, and made visible again at once (an external endpoint such
                # as LocalStack keeps them: the next run gets them without waiting out the visibility timeout).
                self._release(url, messages)
                log.info("%s-%s: stopping; %d received record(s) given back unhandled",
                         self.prefix, spec.name, len(messages))
                return 0
            return self._invoke(spec, url, arn, messages, stopping)
        finally:
            with self._busy_lock:
                self._busy.discard(threading.current_thread())

    def _release(self, url: str, messages: list[dict[str, Any]]) -> None:
        for i in range(0, len(messages), SQS_MAX_BATCH):
            chunk = messages[i:i + SQS_MAX_BATCH]
            try:
                self.sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
                    {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                    for n, m in enumerate(chunk)])
            except Exception:  # noqa: BLE001 - the endpoint may be stopping too; the visibility timeout still applies
                log.warning("could not give back %d record(s) on stop; they reappear after their visibility timeout",
                            len(chunk), exc_info=True)

    def _receive_batch(self, spec: FunctionSpec, url: str, wait_seconds: int,
                       stopping: threading.Event) -> list[dict[str, Any]]:
        """What Lambda's poller hands one invocation: a long poll, then (with a batching window) more receives
        until the batch is full, the window has passed or the function is stopping."""
        size = max(1, min(spec.batch_size, SQS_MAX_BATCH))
        messages = self._receive(url, size, wait_seconds)
        window = float(spec.batching_window_seconds or 0)
        if not messages or window <= 0:
            return messages
        ends = time.monotonic() + window
        while len(messages) < size and not stopping.is_set():
            left = ends - time.monotonic()
            if left <= 0:
                break
            if left >= 1:
                messages += self._receive(url, size - len(messages), min(MAX_WAIT_SECONDS, math.floor(left)))
            else:
                got = self._receive(url, size - len(messages), 0)
                messages += got
                if not got:
                    stopping.wait(min(left, WINDOW_POLL_SECONDS))
        return messages

    def _receive(self, url: str, size: int, wait_seconds: int) -> list[dict[str, Any]]:
        resp = self.sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=size,
            WaitTimeSeconds=wait_seconds,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return list(resp.get("Messages") or [])

    def _invoke(self, spec: FunctionSpec, url: str, arn: str, messages: list[dict[str, Any]],
                stopping: threading.Event | None = None) -> int:
        event = sqs_event(messages, arn, self.region)
        records = event["Records"]
        context = self._context(spec, account=arn.split(":")[4] or DEFAULT_ACCOUNT, stopping=stopping)
        started = time.monotonic()
        try:
            result = self._resolve(spec.handler)(event, context)
        except Exception:
            # As on AWS: a failed invocation leaves the whole batch to reappear
            # after the visibility timeout (and reach the DLQ via RedrivePolicy).
            log.exception("%s failed on %d record(s); none deleted", context.function_name,
                          len(records))
            return len(records)
        finally:
            elapsed = time.monotonic() - started
            if elapsed > spec.timeout:
                log.warning("%s ran %.1fs, over its %ss timeout (Lambda would have killed it)",
                            context.function_name, elapsed, spec.timeout)
        failed = self._failed_ids(result, {r["messageId"] for r in records}, context.function_name)
        if failed is None:
            return len(records)
        done = [r for r in records if r["messageId"] not in failed]
        self._delete(url, done, context.function_name)
        log.info("%s: %d record(s), %d ok, %d reported failed", context.function_name,
                 len(records), len(done), len(failed))
        return len(records)

    @staticmethod
    def _failed_ids(result: Any, ids: set[str], fn: str) -> set[str] | None:
        """Parse a partial batch response; None means "treat the whole batch as failed"."""
        if not isinstance(result, dict) or not result.get("batchItemFailures"):
            return set()  # None / {} / [] = every record succeeded
        failed: set[str] = set()
        for item in result["batchItemFailures"]:
            ident = item.get("itemIdentifier") if isinstance(item, dict) else None
            if ident not in ids:
                # Lambda fails the whole batch on a missing or unknown identifier.
                log.error("%s returned invalid batchItemFailures entry %r; none deleted", fn, item)
                return None
            failed.add(ident)
        return failed

    def _delete(self, url: str, records: list[dict[str, Any]], fn: str) -> None:
        for i in range(0, len(records), SQS_MAX_BATCH):
            chunk = records[i:i + SQS_MAX_BATCH]
            resp = self.sqs.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(n), "ReceiptHandle": r["receiptHandle"]} for n, r in enumerate(chunk)])
            for fail in resp.get("Failed") or []:
                log.warning("%s: delete failed for entry %s: %s", fn, fail.get("Id"),
                            fail.get("Message"))

    def invoke_scheduled(self, spec: FunctionSpec, *, stopping: threading.Event | None = None) -> Any:
        event = scheduled_event(f"{self.prefix}-{spec.name}-schedule", self.region, DEFAULT_ACCOUNT)
        return self._resolve(spec.handler)(event, self._context(spec, stopping=stopping))

    # -- background threads -------------------------------------------------

    @staticmethod
    def _loop(what: str, step: Callable[[], Any], pause: float, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                step()
            except Exception:
                if stopping.is_set():
                    return  # a long poll cut by the endpoint stopping: nothing to report
                # One bad invocation (or an endpoint hiccup) must not end the loop.
                log.exception("%s failed; continuing", what)
                stopping.wait(1.0)  # avoid a hot loop on persistent errors
                continue
            if pause:
                stopping.wait(pause)

    def start(self) -> None:
        """Start a poller per queue and a thread per schedule. After a `stop()`, a new set: each start has its
        own stop event, so a poller of the stopped set still in its long poll ends (giving back what the poll
        brings) instead of polling on beside the new one."""
        if self.stop_event.is_set():
            self.stop_event = threading.Event()
        stopping = self.stop_event
        for spec in self.specs:
            if spec.queue is not None:
                self.queue(spec)  # resolve now: a missing queue should fail startup
                self._spawn(f"sqs:{spec.name}", functools.partial(self.poll_once, spec, stopping=stopping), 0,
                            stopping, polls=True)
            if spec.schedule and spec.loops:
                # A looping function (the notifier) runs until its time is nearly out: start the next run at once.
                self._spawn(f"loop:{spec.name}", functools.partial(self.invoke_scheduled, spec, stopping=stopping),
                            0, stopping)
            elif spec.schedule:
                # Run immediately, then far more often than the deployed rate (a `rate(1 minute)`
                # every schedule_seconds, slower rates in proportion) so work stuck behind a
                # failed publish goes out quickly without the 5-minute sweeps flooding the emulator.
                self._spawn(f"schedule:{spec.name}", functools.partial(self.invoke_scheduled, spec, stopping=stopping),
                            self.schedule_seconds * rate_minutes(spec.schedule), stopping)

    def _spawn(self, name: str, step: Callable[[], Any], pause: float, stopping: threading.Event, *,
               polls: bool = False) -> None:
        t = threading.Thread(target=self._loop, args=(name, step, pause, stopping), name=name, daemon=True)
        t.start()
        self._threads.append(t)
        if polls:
            self._pollers.add(t)

    def _waited_for(self, t: threading.Thread) -> bool:
        """A scheduled function's thread always; a queue's poller only while it runs a handler (or deletes)."""
        with self._busy_lock:
            return t not in self._pollers or t in self._busy

    def stop(self, timeout: float = 5.0) -> None:
        """Signal every loop and join those running a handler; returns once they stopped or `timeout` passed.
        A poller that is only waiting in a long poll is not waited for (see the module's docstring)."""
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            while t.is_alive() and self._waited_for(t) and time.monotonic() < deadline:
                t.join(min(0.05, max(0.0, deadline - time.monotonic())))
            if t.is_alive() and self._waited_for(t):
                log.warning("thread %s still busy after %.0fs (a handler is running)", t.name, timeout)
        self._threads = [t for t in self._threads if t.is_alive() and self._waited_for(t)]
        self._pollers = {t for t in self._pollers if t.is_alive()}
