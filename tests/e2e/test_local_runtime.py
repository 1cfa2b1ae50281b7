"""End to end: start the local runtime (`python -m infra.local`, what `make run` does) in a
subprocess and drive register -> login -> agent -> task -> completed result over HTTP.

Two flavours: with nothing configured (embedded Postgres, Redis and moto — a fresh
laptop) and with this machine's real Postgres and Redis.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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
        # Not under tmp (pytest's /tmp/pytest-of-<user>): run as root, the embedded Postgres runs as
        # the `pgserver` user and needs o+x on every parent, and each pytest session that starts
        # (parallel runs on this machine) chmods that root back to 0700 -> initdb: permission denied.
        self.state_dir = Path(tempfile.mkdtemp(prefix="ymera-e2e-"))
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items()
               if k not in {"DATABASE_URL", "REDIS_URL", "AWS_ENDPOINT_URL", "YMERA_JWT_SECRET", "YMERA_STAGE"}}
        env.update(extra_env)
        self.log = open(tmp / "runtime.log", "w+")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "infra.local", "--port", str(self.port), "--state-dir", str(self.state_dir)],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)  # its own process group, as in a terminal: Ctrl-C reaches all of it

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"runtime exited early:\n{self.output(tail=20000)}")
            try:
                # Ready = the API answers and the banner is out (the API serves a moment before it is printed).
                if (requests.get(f"{self.base}/health/ready", timeout=2).status_code == 200
                        and "local runtime ready in" in self.output(tail=10**7)):
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"runtime not ready after {timeout}s:\n{self.output()}")

    def output(self, tail: int = 5000) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-tail:]

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.log.close()
            shutil.rmtree(self.state_dir, ignore_errors=True)


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

    # Audit rows carry the request id API Gateway would give them (chalice local gave none).
    rows = s.get(f"{base}/audit-logs", timeout=5).json()["items"]
    assert rows and all(row["request_id"] for row in rows), rows

    # Every access-log line is the API's, however many handlers ran in between (the lease reaper's
    # function_name used to leak onto API lines: one Logger shared by every thread).
    time.sleep(2.5)  # the 2-s schedules have run meanwhile
    assert s.get(f"{base}/health", timeout=5).status_code == 200
    lines = [json.loads(line) for line in runtime.output(tail=10**8).splitlines()
             if line.startswith("{") and '"message":"request"' in line]
    assert lines
    assert {line.get("function_name") for line in lines} == {"ymera-local-api"}, lines[-1]
    assert all(line["request_id"] for line in lines)
    handler_lines = [json.loads(line) for line in runtime.output(tail=10**8).splitlines()
                     if line.startswith("{") and '"function_name":"ymera-local-agent-' in line]
    assert handler_lines, "the consumers' lines keep their own function_name"


def test_nothing_configured_means_embedded_postgres_in_the_state_dir(tmp_path: Path) -> None:
    """GIVEN no DATABASE_URL WHEN the runtime starts THEN it runs the embedded Postgres server
    with its data under the state dir, and `make admin`'s wrapper shares that running server."""
    rt = Runtime(tmp_path, {})
    try:
        rt.wait_ready()
        out = rt.output(tail=10**7)
        assert "(embedded Postgres)" in out, out[-5000:]
        assert (rt.state_dir / "pgdata" / "PG_VERSION").is_file()
        health = requests.get(f"{rt.base}/health/ready", timeout=5).json()
        assert health["checks"]["database"]["status"] == "ok"

        # What `make admin` runs while `make run` is up: same server, and it stays up afterwards.
        name = f"adm{uuid.uuid4().hex[:8]}"
        admin = subprocess.run(
            [sys.executable, "-m", "infra.local.postgres", "--state-dir", str(rt.state_dir), "--",
             sys.executable, "-m", "chalicelib.admin", "create-admin", "--username", name,
             "--email", f"{name}@example.com"],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
            env={**{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
                 "YMERA_JWT_SECRET": (rt.state_dir / "jwt_secret").read_text().strip(),
                 "YMERA_ADMIN_PASSWORD": "correct horse battery"})
        assert admin.returncode == 0, admin.stderr
        r = requests.post(f"{rt.base}/auth/login", json={"username": name, "password": "correct horse battery"},
                          timeout=10)
        assert r.status_code == 200, r.text
        postmaster = int((rt.state_dir / "pgdata" / "postmaster.pid").read_text().split()[0])
    finally:
        code = rt.stop()
    assert code == 0, "runtime did not stop cleanly"
    deadline = time.monotonic() + 3
    while _pid_alive(postmaster) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _pid_alive(postmaster), "embedded Postgres left running"


def test_a_sqlite_database_url_is_refused_with_the_fix(tmp_path: Path) -> None:
    rt = Runtime(tmp_path, {"DATABASE_URL": f"sqlite:///{tmp_path / 'old.db'}"})
    try:
        code = rt.proc.wait(timeout=60)
        out = rt.output()
    finally:
        rt.stop()
    assert code == 1, out
    assert "no longer supported" in out and "unset DATABASE_URL" in out, out


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_ctrl_c_stops_everything_within_3_seconds(tmp_path: Path) -> None:
    """GIVEN a running runtime (embedded Postgres, Redis, moto, pollers) WHEN Ctrl-C reaches its
    process group THEN the group and the Postgres server are gone within 3 s (was 5-8 s)."""
    rt = Runtime(tmp_path, {"YMERA_LOG_LEVEL": "DEBUG"})  # DEBUG: how long each part took to stop
    try:
        rt.wait_ready()
        assert requests.get(f"{rt.base}/health", timeout=5).status_code == 200
        postmaster = int((rt.state_dir / "pgdata" / "postmaster.pid").read_text().split()[0])
        time.sleep(1.5)  # let every poller and schedule get going
        started = time.monotonic()
        os.killpg(rt.proc.pid, signal.SIGINT)
        code = rt.proc.wait(timeout=10)
        while (_group_alive(rt.proc.pid) or _pid_alive(postmaster)) and time.monotonic() - started < 10:
            time.sleep(0.02)
        elapsed = time.monotonic() - started
        out = rt.output()
    finally:
        rt.stop()
    assert code == 0, out
    assert not _group_alive(rt.proc.pid) and not _pid_alive(postmaster), out
    assert elapsed < 3.0, f"stopped after {elapsed:.2f}s\n{out}"


def test_a_producer_following_the_readme_sends_a_signed_task_that_runs(runtime: Runtime) -> None:
    """`make run` consumes the ingress queue too: clients/python/producer.py -> embedded SQS -> a completed task."""

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


def test_the_functions_run_in_their_own_process_whose_death_stops_the_runtime(tmp_path: Path) -> None:
    """Issue #14: the handlers ran in the API's process and competed with it for its GIL. GIVEN make run THEN
    the runner and the handlers are a child process of their own (named in the banner), and WHEN that child
    dies THEN the runtime says so and stops with exit code 1 (no API without consumers behind it)."""
    rt = Runtime(tmp_path, {})
    try:
        rt.wait_ready()
        match = re.search(r"Functions +child process (\d+)", rt.output(tail=10**7))
        assert match, rt.output()
        child = int(match.group(1))
        assert child != rt.proc.pid
        assert b"infra.local.functions" in Path(f"/proc/{child}/cmdline").read_bytes()
        assert int(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[1]) == rt.proc.pid
        os.kill(child, signal.SIGKILL)
        code = rt.proc.wait(timeout=20)
        out = rt.output(tail=10**7)
    finally:
        if rt.proc.poll() is None:
            rt.proc.kill()
        rt.log.close()
        shutil.rmtree(rt.state_dir, ignore_errors=True)
    assert code == 1, out[-3000:]
    assert f"the functions' process (pid {child}) exited unexpectedly" in out
