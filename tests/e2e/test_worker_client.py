"""End to end: the worker library (clients/python) against the local runtime (`python -m infra.local`).

A user creates an external agent over HTTP and sends it tasks; the example worker, running
in a thread of this process, leases them, heartbeats through a task that outlives its lease,
completes or fails them, and stops gracefully. The runtime's scheduled lease reaper is live,
so a missing heartbeat would show up as a second attempt.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.test_local_runtime import Runtime, wait_for_terminal

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "clients" / "python"))

import example_worker  # noqa: E402 - clients/python is not a package
from ymera_worker import AuthError, Result, Worker  # noqa: E402

pytestmark = pytest.mark.e2e

LEASE_SECONDS = 2  # short, so a task that runs 3 s survives only by heartbeating


@pytest.fixture(params=["postgres+redis", "embedded"])
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    env = {"YMERA_LEASE_SECONDS": str(LEASE_SECONDS)}
    if request.param == "postgres+redis":
        from tests.conftest import REDIS_PREFIX

        env.update(DATABASE_URL=request.getfixturevalue("pg_url"), REDIS_URL=request.getfixturevalue("redis_url"),
                   YMERA_REDIS_KEY_PREFIX=f"{REDIS_PREFIX}e2e-worker:")
    rt = Runtime(tmp_path, env)
    try:
        rt.wait_ready()
        yield rt
    finally:
        code = rt.stop()
    assert code == 0, f"runtime did not stop cleanly ({code})"


def signed_in(base: str) -> requests.Session:
    s, name = requests.Session(), f"w{uuid.uuid4().hex[:8]}"
    r = s.post(f"{base}/auth/register", json={"username": name, "email": f"{name}@example.com",
                                              "password": "correct horse battery"}, timeout=10)
    assert r.status_code == 201, r.text
    r = s.post(f"{base}/auth/login", json={"username": name, "password": "correct horse battery"}, timeout=10)
    s.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
    return s


def test_the_example_worker_serves_an_external_agent(runtime: Runtime) -> None:
    base = runtime.base
    s = signed_in(base)
    r = s.post(f"{base}/agents", json={"name": "counter", "type": "examination", "mode": "external"}, timeout=5)
    assert r.status_code == 201, r.text
    agent = r.json()

    def slow_count(task: dict[str, Any]) -> Result:
        if "slow" in task["input_data"]["source"]:
            time.sleep(LEASE_SECONDS + 1)  # outlives its lease: only heartbeats keep it
        return example_worker.count(task)

    def create(source: str, **target: Any) -> str:
        body = {"title": "count", "input_data": {"source": source}, **(target or {"agent_id": agent["id"]})}
        r = s.post(f"{base}/tasks", json=body, timeout=5)
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "queued"
        return str(r.json()["id"])

    counted = create("def f(x):\n    return x + x\n\nprint(f(2))\n")
    slow = create("# slow\nx = 1\n")
    blank = create("   ")  # valid input for the type, nothing for this worker to count
    routed = create("a = b = c\n", agent_type="examination")  # the only examination agent is this one

    worker = Worker(base, agent["id"], agent["api_key"], max_tasks=2, wait_seconds=1, heartbeat_seconds=0.5)
    thread = threading.Thread(target=worker.run, args=(slow_count,), daemon=True)
    thread.start()
    try:
        done = {tid: wait_for_terminal(s, base, tid, timeout=30) for tid in (counted, slow, blank, routed)}
    finally:
        worker.stop()
        thread.join(timeout=10)
    assert not thread.is_alive(), "the worker did not stop"

    out = done[counted]["result"]["output_data"]
    assert done[counted]["status"] == "completed"
    assert (out["lines"], out["blank_lines"], out["words"]) == (4, 1, 7)
    assert out["top_identifiers"][0] == {"name": "x", "count": 3}
    assert done[counted]["result"]["metrics"]["words"] == 7
    assert done[slow]["status"] == "completed" and done[slow]["attempts"] == 1  # never re-delivered
    assert done[slow]["result"]["metrics"]["duration_ms"] >= LEASE_SECONDS * 1000
    assert done[blank]["status"] == "failed" and done[blank]["error"]["code"] == "EMPTY_SOURCE"
    assert done[routed]["status"] == "completed" and done[routed]["agent_id"] == agent["id"]
    assert worker.processed == 4

    status = s.get(f"{base}/agents/{agent['id']}/status", timeout=5).json()
    assert status["in_flight"] == [] and status["last_heartbeat"]
    assert status["task_counts"]["completed"] == 3 and status["task_counts"]["failed"] == 1

    with pytest.raises(AuthError):
        Worker(base, agent["id"], "ymk_not-the-key", wait_seconds=0).run(slow_count)
