"""`make run`'s moto runs as a child process (infra.local.emulator.spawn_moto): it serves SQS, it is stopped
when asked and only then, an unexpected exit is reported, Ctrl-C (SIGINT) is left to the parent, and it never
outlives its parent, however the parent dies."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.local.emulator import AwsEndpoint, EndpointError, spawn_moto, sqs_client

ROOT = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return True


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ENDPOINT_URL", "MOTO_PORT"):  # spawn_moto exports the URL: recorded here, undone after
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def exits(env: None) -> Iterator[tuple[AwsEndpoint, list[int]]]:
    reported: list[int] = []
    endpoint = spawn_moto(on_exit=reported.append)
    try:
        yield endpoint, reported
    finally:
        endpoint.stop()


def test_the_child_serves_sqs_and_a_requested_stop_is_quick_and_not_reported(
        exits: tuple[AwsEndpoint, list[int]]) -> None:
    endpoint, reported = exits
    assert endpoint.kind == "moto" and endpoint.pid is not None and endpoint.pid != os.getpid()
    assert os.environ["AWS_ENDPOINT_URL"] == endpoint.url
    sqs = sqs_client(endpoint.url)
    url = sqs.create_queue(QueueName="child-q")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="hi")
    assert [m["Body"] for m in sqs.receive_message(QueueUrl=url).get("Messages", [])] == ["hi"]

    started = time.monotonic()
    endpoint.stop()
    assert gone_within(endpoint.pid, 3.0) and time.monotonic() - started < 3.0
    time.sleep(0.2)  # the watcher has seen the exit by now
    assert reported == []


def test_ctrl_c_is_left_to_the_parent(exits: tuple[AwsEndpoint, list[int]]) -> None:
    """A terminal's Ctrl-C reaches the whole process group; the parent stops the emulator after the API and
    the runner, which may still be using it."""
    endpoint, reported = exits
    assert endpoint.pid is not None
    os.kill(endpoint.pid, signal.SIGINT)
    time.sleep(0.3)
    assert alive(endpoint.pid) and reported == []
    sqs = sqs_client(endpoint.url, quick=True)
    sqs.create_queue(QueueName="after-sigint")  # still serving (raises otherwise)
    assert any(u.endswith("/after-sigint") for u in sqs.list_queues()["QueueUrls"])


def test_an_unexpected_exit_is_reported_and_logged(exits: tuple[AwsEndpoint, list[int]],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    endpoint, reported = exits
    assert endpoint.pid is not None
    with caplog.at_level(logging.ERROR, logger="infra.local.emulator"):
        os.kill(endpoint.pid, signal.SIGKILL)
        deadline = time.monotonic() + 3
        while not reported and time.monotonic() < deadline:
            time.sleep(0.05)
    assert reported == [-signal.SIGKILL]
    assert f"pid {endpoint.pid}" in caplog.text and "exited unexpectedly" in caplog.text


def test_the_child_does_not_outlive_a_parent_that_is_killed(env: None, tmp_path: Path) -> None:
    """GIVEN a parent (like `make run`) that spawned moto WHEN the parent is SIGKILLed (no cleanup runs)
    THEN the emulator exits too: no orphan keeps the port."""
    script = ("import sys, time\n"
              "from infra.local.emulator import spawn_moto\n"
              "e = spawn_moto()\n"
              "print(e.pid, flush=True)\n"
              "time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert alive(child)
        parent.kill()
        parent.wait(5)
        assert gone_within(child, 3.0), "moto outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()


def test_a_busy_requested_port_is_refused_before_spawning(env: None) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(EndpointError, match="already in use"):
            spawn_moto(port=s.getsockname()[1])
