"""The local event-source runner builds Lambda-shaped SQS events and deletes
only what the handler did not report in batchItemFailures."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from infra.local.runner import EventSourceRunner, LambdaContext
from infra.manifest import FunctionSpec, QueueSpec

PREFIX = "ymera-test"
QUEUE = QueueSpec(suffix="agent-validation", visibility_timeout=30, max_receive_count=3)
SPEC = FunctionSpec(name="agent-validation", handler="tests.fake.handler", queue=QUEUE,
                    timeout=60, memory=256)


@pytest.fixture()
def sqs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        client = boto3.client("sqs", region_name="us-east-1")
        dlq_url = client.create_queue(QueueName=QUEUE.dlq_name(PREFIX))["QueueUrl"]
        dlq_arn = client.get_queue_attributes(
            QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        client.create_queue(QueueName=QUEUE.name(PREFIX), Attributes={
            "VisibilityTimeout": str(QUEUE.visibility_timeout),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn,
                                         "maxReceiveCount": str(QUEUE.max_receive_count)}),
        })
        yield client


def _queue(sqs: Any) -> tuple[str, str]:
    url = sqs.get_queue_url(QueueName=QUEUE.name(PREFIX))["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def _send_three(sqs: Any) -> list[str]:
    url, _ = _queue(sqs)
    bodies = [json.dumps({"task_id": f"t{i}"}) for i in range(3)]
    for body in bodies:
        sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes={
            "trace": {"DataType": "String", "StringValue": "abc"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        })
    return bodies


def _remaining(sqs: Any, handles: list[str]) -> list[str]:
    """Bodies still in the queue: make in-flight messages visible again, then drain."""
    url, _ = _queue(sqs)
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    in_flight = int(attrs["ApproximateNumberOfMessagesNotVisible"])
    visible = int(attrs["ApproximateNumberOfMessages"])
    assert visible == 0  # the runner received the whole batch
    bodies: list[str] = []
    # Receiving to list them needs the in-flight ones visible: reset their timeout.
    for handle in handles:
        try:
            sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)
        except sqs.exceptions.ClientError:
            pass  # deleted messages have no valid receipt handle any more
    for _ in range(3):
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            bodies.append(m["Body"])
    assert len(bodies) == in_flight
    return bodies


def _runner(sqs: Any, handler: Any) -> EventSourceRunner:
    def resolve(dotted: str) -> Any:
        assert dotted == SPEC.handler
        return handler

    return EventSourceRunner(sqs, PREFIX, [SPEC], handler_resolver=resolve, wait_seconds=0)


def test_partial_batch_failure_deletes_only_successes(sqs: Any) -> None:
    bodies = _send_three(sqs)
    _, queue_arn = _queue(sqs)
    calls: list[tuple[dict[str, Any], Any]] = []
    handles: list[str] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        calls.append((event, context))
        handles.extend(r["receiptHandle"] for r in event["Records"])
        return {"batchItemFailures": [{"itemIdentifier": event["Records"][1]["messageId"]}]}

    assert _runner(sqs, handler).poll_once(SPEC) == 3

    assert len(calls) == 1
    event, context = calls[0]
    records = event["Records"]
    assert sorted(r["body"] for r in records) == sorted(bodies)
    assert len({r["messageId"] for r in records}) == 3
    for r in records:
        assert {"messageId", "receiptHandle", "body", "attributes", "messageAttributes",
                "md5OfBody", "eventSource", "eventSourceARN", "awsRegion"} <= r.keys()
        assert r["eventSource"] == "aws:sqs"
        assert r["eventSourceARN"] == queue_arn
        assert r["awsRegion"] == "us-east-1"
        assert r["attributes"]["ApproximateReceiveCount"] == "1"
        assert {"SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"} <= r["attributes"].keys()
        assert r["messageAttributes"]["trace"]["stringValue"] == "abc"
        assert r["messageAttributes"]["trace"]["dataType"] == "String"
        assert r["messageAttributes"]["blob"]["binaryValue"] == "AAE="  # base64, as Lambda sends it
        assert r["md5OfBody"]
    assert isinstance(context, LambdaContext)
    assert context.function_name == f"{PREFIX}-{SPEC.name}"
    assert context.invoked_function_arn.endswith(f":function:{PREFIX}-{SPEC.name}")
    assert context.memory_limit_in_mb == 256
    assert 0 < context.get_remaining_time_in_millis() <= 60_000

    url, _ = _queue(sqs)
    not_visible = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    assert not_visible["ApproximateNumberOfMessagesNotVisible"] == "1"
    assert _remaining(sqs, handles) == [records[1]["body"]]


def test_handler_exception_deletes_nothing(sqs: Any) -> None:
    bodies = _send_three(sqs)
    handles: list[str] = []

    def handler(event: dict[str, Any], _context: Any) -> None:
        handles.extend(r["receiptHandle"] for r in event["Records"])
        raise RuntimeError("boom")

    assert _runner(sqs, handler).poll_once(SPEC) == 3
    assert sorted(_remaining(sqs, handles)) == sorted(bodies)


def test_unknown_item_identifier_fails_whole_batch(sqs: Any) -> None:
    bodies = _send_three(sqs)
    handles: list[str] = []

    def handler(event: dict[str, Any], _context: Any) -> dict[str, Any]:
        handles.extend(r["receiptHandle"] for r in event["Records"])
        return {"batchItemFailures": [{"itemIdentifier": "not-a-message-id"}]}

    _runner(sqs, handler).poll_once(SPEC)
    assert sorted(_remaining(sqs, handles)) == sorted(bodies)


def test_empty_queue_does_not_invoke(sqs: Any) -> None:
    def handler(_event: dict[str, Any], _context: Any) -> None:
        raise AssertionError("must not be called without records")

    assert _runner(sqs, handler).poll_once(SPEC) == 0


def test_background_runner_stops_quickly(sqs: Any) -> None:
    seen: list[int] = []
    sched = FunctionSpec(name="outbox-relay", handler="tests.fake.handler", schedule="rate(1 minute)")
    runner = EventSourceRunner(sqs, PREFIX, [SPEC, sched],
                               handler_resolver=lambda _d: lambda e, _c: seen.append(len(e)),
                               schedule_seconds=0.05, wait_seconds=1)
    runner.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    runner.stop(timeout=5)
    assert time.monotonic() - t0 < 3
    assert not runner._threads
    assert seen  # the scheduled handler ran at least once


def test_local_schedules_keep_the_deployed_rates_proportions() -> None:
    from infra.local.runner import rate_minutes

    assert rate_minutes("rate(1 minute)") == 1
    assert rate_minutes("rate(5 minutes)") == 5
    assert rate_minutes("rate(30 seconds)") == 0.5
    assert rate_minutes("cron(0 12 * * ? *)") == 1


def test_embedded_redis_accepts_a_burst_of_connections() -> None:
    """The runtime's threads connect at once; socketserver's default backlog of 5 dropped SYNs (1 s stalls)."""
    import threading

    import redis

    from infra.local.environment import EmbeddedRedis

    server = EmbeddedRedis().start()
    assert server._server.request_queue_size >= 128
    failures: list[str] = []

    def ping() -> None:
        try:
            redis.Redis.from_url(server.url, socket_connect_timeout=5, socket_timeout=5).ping()
        except redis.RedisError as exc:
            failures.append(repr(exc))

    threads = [threading.Thread(target=ping) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    server.stop()
    assert failures == []


def test_embedded_redis_starts_with_the_apps_lua_scripts_loaded() -> None:
    """fakeredis can drop the connection on a NOSCRIPT miss; preloaded scripts never miss."""
    import hashlib

    import redis

    from chalicelib.ratelimit import LUA_SCRIPTS
    from infra.local.environment import EmbeddedRedis

    server = EmbeddedRedis().start()
    try:
        client = redis.Redis.from_url(server.url)
        shas = [hashlib.sha1(script.encode()).hexdigest() for script in LUA_SCRIPTS]
        assert client.script_exists(*shas) == [True] * len(LUA_SCRIPTS)
    finally:
        server.stop()


def test_a_handlers_lambda_context_stays_on_its_own_threads_log_lines() -> None:
    """GIVEN one Logger shared by a handler thread and an API thread (as under make run)
    WHEN the handler runs with its Lambda context THEN the API thread's lines do not carry it."""
    import io
    import logging
    import threading

    from aws_lambda_powertools import Logger

    from infra.local.logkeys import per_thread_log_keys

    buf = io.StringIO()
    shared = Logger(service="ymera-test-logkeys", logger_handler=logging.StreamHandler(buf))
    per_thread_log_keys(shared)
    inside, done = threading.Event(), threading.Event()

    @shared.inject_lambda_context(clear_state=True)
    def handler(_event: dict[str, Any], _context: Any) -> None:
        shared.info("from the reaper")
        inside.set()
        done.wait(5)

    worker = threading.Thread(target=handler, args=({}, LambdaContext("ymera-local-lease-reaper", 60, 512,
                                                                      "us-east-1", "123456789012")))
    worker.start()
    assert inside.wait(5)

    def api_request() -> None:
        shared.append_keys(function_name="ymera-local-api")
        shared.info("request")

    api = threading.Thread(target=api_request)
    api.start()
    api.join()
    shared.info("main thread")
    done.set()
    worker.join()

    lines = {json.loads(line)["message"]: json.loads(line) for line in buf.getvalue().splitlines()}
    assert lines["from the reaper"]["function_name"] == "ymera-local-lease-reaper"
    assert lines["request"]["function_name"] == "ymera-local-api"
    assert "function_name" not in lines["main thread"]
    assert lines["request"]["service"] == lines["main thread"]["service"] == "ymera-test-logkeys"


def test_the_local_api_server_takes_100_concurrent_clients() -> None:
    """socketserver's listen backlog of 5 made 15-36 % of 100 simultaneous connections fail
    (dropped SYNs: resets, or connects stalled past the client's timeout). Bounded: 100 clients,
    one request each, a 10 s timeout, loopback only."""
    import socket
    import threading

    from chalice import Chalice

    from infra.local.server import ApiServer

    app = Chalice(app_name="ymera-test-burst")

    @app.route("/")
    def index() -> dict[str, bool]:
        return {"ok": True}

    server = ApiServer(app, "127.0.0.1", 0, function_name="ymera-test-api").start()
    clients = 100
    barrier = threading.Barrier(clients)
    failures: list[str] = []

    def one() -> None:
        barrier.wait(10)
        try:
            with socket.create_connection((server.host, server.port), timeout=10) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: local\r\nConnection: close\r\n\r\n")
                reply = b""
                while chunk := sock.recv(65536):
                    reply += chunk
            if not reply.startswith(b"HTTP/1.1 200"):
                failures.append(f"reply {reply[:40]!r}")
        except OSError as exc:
            failures.append(type(exc).__name__)

    threads = [threading.Thread(target=one) for _ in range(clients)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        server.stop()
    assert failures == [], f"{len(failures)} of {clients} failed: {sorted(set(failures))}"


def test_the_runners_pollers_fit_in_its_sqs_connection_pool(caplog: pytest.LogCaptureFixture,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """13 queue pollers shared botocore's default pool of 10 connections: "Connection pool is
    full, discarding connection" after every round of long polls and at shutdown."""
    import logging

    from infra.local.emulator import sqs_client, start_moto
    from infra.local.runner import pool_size_for

    for var in ("MOTO_PORT", "AWS_ENDPOINT_URL"):
        monkeypatch.setenv(var, "")  # start_moto exports both: recorded here so they are undone after
    endpoint = start_moto()
    try:
        specs = [FunctionSpec(name=f"agent-t{i}", handler="tests.fake.handler",
                              queue=QueueSpec(suffix=f"agent-t{i}", visibility_timeout=30, max_receive_count=3),
                              timeout=60, memory=256) for i in range(13)]
        sqs = sqs_client(endpoint.url, max_pool_connections=pool_size_for(specs))
        for spec in specs:
            assert spec.queue is not None
            sqs.create_queue(QueueName=spec.queue.name(PREFIX))
        runner = EventSourceRunner(sqs, PREFIX, specs, handler_resolver=lambda _d: lambda e, _c: None,
                                   wait_seconds=1)
        with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"):
            runner.start()
            time.sleep(2.5)  # two rounds of 1-s long polls by all 13 pollers at once
            runner.stop()
    finally:
        endpoint.stop()
    assert not [r for r in caplog.records if "Connection pool is full" in r.getMessage()]


def test_stop_does_not_wait_for_a_long_poll(sqs: Any) -> None:
    """Pollers wait 20 s, as Lambda's do; Ctrl-C waits for handlers only, and what a cut-short poll still
    receives is not handled: it is given back, visible again at once."""
    seen: list[int] = []
    runner = EventSourceRunner(sqs, PREFIX, [SPEC], handler_resolver=lambda _d: lambda e, _c: seen.append(
        len(e["Records"])), wait_seconds=20)
    assert runner.wait_seconds == 20
    runner.start()
    time.sleep(0.3)  # the poller is inside its long poll now
    t0 = time.monotonic()
    runner.stop(timeout=5)
    assert time.monotonic() - t0 < 0.5
    assert not runner._threads  # nothing was running a handler
    url, _ = _queue(sqs)
    sqs.send_message(QueueUrl=url, MessageBody="{}")  # the abandoned long poll receives this
    time.sleep(0.5)
    assert seen == []
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert (int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])) == (1, 0)


def test_stop_waits_for_a_running_handler(sqs: Any) -> None:
    finished: list[bool] = []

    def slow(_event: dict[str, Any], _context: Any) -> None:
        time.sleep(0.5)
        finished.append(True)

    url, _ = _queue(sqs)
    runner = EventSourceRunner(sqs, PREFIX, [SPEC], handler_resolver=lambda _d: slow, wait_seconds=20)
    runner.start()
    sqs.send_message(QueueUrl=url, MessageBody="{}")
    time.sleep(0.2)  # received, in the handler
    runner.stop(timeout=5)
    assert finished == [True]


def _windowed(window: int, batch: int = 10) -> FunctionSpec:
    return FunctionSpec(name="agent-validation", handler="tests.fake.handler", queue=QUEUE, timeout=60,
                        memory=256, batch_size=batch, batching_window_seconds=window)


def test_a_batching_window_gathers_records_into_one_invocation(sqs: Any) -> None:
    import threading

    sizes: list[int] = []
    url, _ = _queue(sqs)
    spec = _windowed(1)
    runner = EventSourceRunner(sqs, PREFIX, [spec], handler_resolver=lambda _d: lambda e, _c: sizes.append(
        len(e["Records"])), wait_seconds=1)
    sqs.send_message(QueueUrl=url, MessageBody="{}")
    later = threading.Timer(0.3, lambda: [sqs.send_message(QueueUrl=url, MessageBody="{}") for _ in range(2)])
    later.start()
    t0 = time.monotonic()
    assert runner.poll_once(spec) == 3
    later.join()
    assert sizes == [3]
    assert 0.9 <= time.monotonic() - t0 < 2.0  # the window (1 s), not the batch, ended it


def test_a_full_batch_ends_the_window_early(sqs: Any) -> None:
    url, _ = _queue(sqs)
    spec = _windowed(5, batch=3)
    for _ in range(3):
        sqs.send_message(QueueUrl=url, MessageBody="{}")
    runner = EventSourceRunner(sqs, PREFIX, [spec], handler_resolver=lambda _d: lambda e, _c: None, wait_seconds=1)
    t0 = time.monotonic()
    assert runner.poll_once(spec) == 3
    assert time.monotonic() - t0 < 1.0


def test_without_a_window_a_record_is_handled_at_once(sqs: Any) -> None:
    url, _ = _queue(sqs)
    spec = _windowed(0)
    sqs.send_message(QueueUrl=url, MessageBody="{}")
    runner = EventSourceRunner(sqs, PREFIX, [spec], handler_resolver=lambda _d: lambda e, _c: None, wait_seconds=1)
    t0 = time.monotonic()
    assert runner.poll_once(spec) == 1
    assert time.monotonic() - t0 < 0.5


def test_the_emulator_does_not_keep_every_sqs_message(sqs: Any) -> None:
    """moto tracks every model instance for its reset; `make run`'s emulator must not keep each message (and each
    receive's copy) for its whole life (bench/run_memory.py: ~2.2 kB a task)."""
    from moto.sqs.models import Message

    from infra.local.emulator import untrack_sqs_messages

    saved = Message.instances_tracked  # type: ignore[attr-defined]
    untrack_sqs_messages()
    try:
        url, _ = _queue(sqs)
        for _ in range(20):
            sqs.send_message(QueueUrl=url, MessageBody="{}")
            for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        assert len(Message.instances_tracked) == 0  # type: ignore[attr-defined]
    finally:
        Message.instances_tracked = saved  # type: ignore[attr-defined]


def test_a_poller_of_a_stopped_start_gives_back_what_its_poll_brings_after_a_restart(sqs: Any) -> None:
    """Each start() has its own stop event. A poller stopped inside its long poll used to see the *runner's*
    event: once the runner was started again (a benchmark's pause and resume) that event was clear, so the old
    poller handled what its poll brought and went on polling beside the new one. Now it gives the records back
    (visible at once) and ends."""
    import threading

    seen: list[int] = []
    runner = EventSourceRunner(sqs, PREFIX, [], handler_resolver=lambda _d: lambda e, _c: seen.append(
        len(e["Records"])), wait_seconds=0)
    runner.start()
    first = runner.stop_event
    runner.stop()
    runner.start()
    assert runner.stop_event is not first and first.is_set() and not runner.stop_event.is_set()
    url, _ = _queue(sqs)
    sqs.send_message(QueueUrl=url, MessageBody="{}")
    assert runner.poll_once(SPEC, stopping=first) == 0  # the old start's poller: not handled, given back
    assert seen == []
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert (int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])) == (1, 0)
    assert runner.poll_once(SPEC) == 1 and seen == [1]  # the running start's poller handles it
    ended = threading.Event()
    EventSourceRunner._loop("old", lambda: ended.set(), 0, first)  # a loop of a stopped start runs no step
    assert not ended.is_set()
    runner.stop()
