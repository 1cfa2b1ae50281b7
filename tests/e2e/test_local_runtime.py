"""End to end: start the local runtime (`python -m infra.local`, what `make run` does) in a
subprocess and drive register -> login -> agent -> task -> completed result over HTTP.

Two flavours: with nothing configured (embedded SQLite, Redis and moto — a fresh
laptop) and with this machine's real Postgres and Redis.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Runtime:
    def __init__(self, tmp: Path, extra_env: dict[str, str]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items()
               if k not in {"DATABASE_URL", "REDIS_URL", "AWS_ENDPOINT_URL", "YMERA_JWT_SECRET", "YMERA_STAGE"}}
        env.update(extra_env)
        self.log = open(tmp / "runtime.log", "w+")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "infra.local", "--port", str(self.port), "--state-dir", str(tmp / "state")],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"runtime exited early:\n{self.output()}")
            try:
                if requests.get(f"{self.base}/health/ready", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"runtime not ready after {timeout}s:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-5000:]

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.log.close()


@pytest.fixture(params=["embedded", "postgres+redis"])
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    env: dict[str, str] = {}
    if request.param == "postgres+redis":
        env["DATABASE_URL"] = request.getfixturevalue("pg_url")
        env["REDIS_URL"] = request.getfixturevalue("redis_url")
        from tests.conftest import REDIS_PREFIX

        env["YMERA_REDIS_KEY_PREFIX"] = f"{REDIS_PREFIX}e2e:"
    rt = Runtime(tmp_path, env)
    try:
        rt.wait_ready()
        yield rt
    finally:
        code = rt.stop()
    assert code == 0, f"runtime did not stop cleanly ({code})"


def wait_for_terminal(s: requests.Session, base: str, task_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = s.get(f"{base}/tasks/{task_id}", timeout=5).json()
        if task["status"] in {"completed", "failed", "cancelled", "timed_out"}:
            return dict(task)
        time.sleep(0.2)
    raise AssertionError(f"task {task_id} still {task['status']} after {timeout}s")


def test_task_goes_from_http_to_a_stored_result(runtime: Runtime) -> None:
    base, s = runtime.base, requests.Session()
    name = f"e2e{uuid.uuid4().hex[:8]}"
    r = s.post(f"{base}/auth/register", json={"username": name, "email": f"{name}@example.com",
                                              "password": "correct horse battery"}, timeout=10)
    assert r.status_code == 201, r.text
    r = s.post(f"{base}/auth/login", json={"username": name, "password": "correct horse battery"}, timeout=10)
    assert r.status_code == 200, r.text
    s.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

    validator = s.post(f"{base}/agents", json={"name": "validator", "type": "validation"}, timeout=5).json()
    examiner = s.post(f"{base}/agents", json={"name": "examiner", "type": "examination"}, timeout=5).json()

    r = s.post(f"{base}/tasks", json={
        "agent_id": validator["id"], "title": "check an order",
        "input_data": {"schema": {"type": "object", "required": ["id"],
                                  "properties": {"qty": {"type": "integer", "minimum": 1}}},
                       "payload": {"qty": 0}}}, timeout=5)
    assert r.status_code == 202, r.text
    assert r.headers["Location"] == f"/tasks/{r.json()['id']}"
    done = wait_for_terminal(s, base, r.json()["id"])
    assert done["status"] == "completed"
    assert [e["path"] for e in done["result"]["output_data"]["errors"]] == ["", "/qty"]

    r = s.post(f"{base}/tasks", json={"agent_id": examiner["id"], "title": "review",
                                      "input_data": {"source": "def f(:\n    pass\n"}}, timeout=5)
    done = wait_for_terminal(s, base, r.json()["id"])
    assert done["status"] == "completed"
    assert done["result"]["output_data"]["syntax_errors"][0]["line"] == 1

    listed = s.get(f"{base}/tasks?status=completed", timeout=5).json()["items"]
    assert len(listed) == 2


def test_a_producer_following_the_readme_sends_a_signed_task_that_runs(runtime: Runtime) -> None:
    """`make run` consumes the ingress queue too: clients/python/producer.py -> embedded SQS -> a completed task."""
    import re

    import boto3

    sys.path.insert(0, str(ROOT / "clients" / "python"))
    from producer import Producer  # noqa: PLC0415 - clients/python is not a package

    base, s = runtime.base, requests.Session()
    name = f"e2e{uuid.uuid4().hex[:8]}"
    s.post(f"{base}/auth/register", json={"username": name, "email": f"{name}@example.com",
                                          "password": "correct horse battery"}, timeout=10)
    token = s.post(f"{base}/auth/login", json={"username": name, "password": "correct horse battery"},
                   timeout=10).json()["access_token"]
    s.headers["Authorization"] = f"Bearer {token}"
    s.post(f"{base}/agents", json={"name": "validator", "type": "validation"}, timeout=5)
    key = s.post(f"{base}/producer-keys", json={"name": "e2e"}, timeout=5).json()

    runtime.log.flush()
    runtime.log.seek(0)
    match = re.search(r"AWS endpoint (\S+)", runtime.log.read())  # the banner (output() keeps only the tail)
    assert match, runtime.output()
    sqs = boto3.client("sqs", endpoint_url=match.group(1), region_name="us-east-1",
                       aws_access_key_id="test", aws_secret_access_key="test")
    queue_url = sqs.get_queue_url(QueueName="ymera-local-ingress")["QueueUrl"]
    Producer(sqs, queue_url, key_id=key["key_id"], secret=key["secret"]).send_task(
        agent_type="validation", title="from a producer", idempotency_key="e2e-1",
        input_data={"schema": {"type": "object"}, "payload": {}})

    deadline = time.monotonic() + 30
    items: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not items:
        items = s.get(f"{base}/tasks", timeout=5).json()["items"]
        time.sleep(0.2)
    assert [t["title"] for t in items] == ["from a producer"], runtime.output()
    assert wait_for_terminal(s, base, items[0]["id"])["status"] == "completed"
