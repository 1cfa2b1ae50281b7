"""End to end under the local runtime (`make run`): a receiver on loopback (allowed on development stages)
answers a test event with 500 once; the looping webhook sender the runner keeps re-invoking retries it, signed
as docs/webhooks.md verifies, with the same webhook-id. Then a task's status changes reach it: ledger trigger,
notifier, webhook sink, sender."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.test_local_runtime import Runtime
from tests.integration.webhook_support import Answer, docs_verify, receiving

pytestmark = pytest.mark.e2e


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    # retries 0.1-0.2 s apart instead of 5-10 s, so the test sees the retry the sender schedules
    rt = Runtime(tmp_path, {"YMERA_WEBHOOK_RETRY_BASE_SECONDS": "0.2"})
    try:
        rt.wait_ready()
        yield rt
    finally:
        code = rt.stop()
    assert code == 0, f"runtime did not stop cleanly ({code})"


def test_a_500_is_retried_by_the_running_sender_and_arrives_signed(runtime: Runtime) -> None:
    base, s = runtime.base, requests.Session()
    name = f"wh{uuid.uuid4().hex[:8]}"
    assert s.post(f"{base}/auth/register", json={"username": name, "email": f"{name}@example.com",
                                                 "password": "correct horse battery"}, timeout=10).status_code == 201
    token = s.post(f"{base}/auth/login", json={"username": name, "password": "correct horse battery"},
                   timeout=10).json()["access_token"]
    s.headers["Authorization"] = f"Bearer {token}"
    with receiving() as receiver:
        receiver.script = [Answer(500, body=b"try again")]
        r = s.post(f"{base}/webhooks", json={"url": receiver.url, "event_types": ["run.approval_requested"]},
                   timeout=10)
        assert r.status_code == 201, r.text
        hook = r.json()
        # WHEN a test event is sent: the request's own attempt gets the 500 and schedules a retry
        sent = s.post(f"{base}/webhooks/{hook['id']}/test", timeout=10).json()
        assert sent["status"] == "pending" and sent["last_status_code"] == 500
        # THEN the sender running under the runtime delivers the retry
        first, second = receiver.wait_for(2, timeout=15)
        verify = docs_verify()
        assert first.headers["webhook-id"] == second.headers["webhook-id"]
        assert verify(hook["secret"], second.headers, second.body)["type"] == "webhook.test"
        deadline = time.monotonic() + 10
        while True:  # the receiver has it; the sender records the answer a moment later
            log = s.get(f"{base}/webhooks/{hook['id']}/deliveries", timeout=10).json()["items"]
            if log[0]["status"] != "pending" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert [a["status_code"] for a in log[0]["attempt_log"]] == [500, 200] and log[0]["status"] == "succeeded"
        # AND a task's status changes arrive through the ledger, the notifier and the sender, signed
        assert s.put(f"{base}/webhooks/{hook['id']}", json={"event_types": ["task.status_changed"]},
                     timeout=10).status_code == 200
        agent = s.post(f"{base}/agents", json={"name": "v", "type": "validation"}, timeout=10).json()
        task = s.post(f"{base}/tasks", json={"agent_id": agent["id"], "title": "t", "input_data": {
            "schema": {"type": "object"}, "payload": {}}}, timeout=10).json()
        deadline = time.monotonic() + 20
        statuses: set[str] = set()
        while "completed" not in statuses and time.monotonic() < deadline:
            statuses = {verify(hook["secret"], r.headers, r.body)["status"] for r in receiver.requests[2:]}
            time.sleep(0.1)
        assert {"processing", "completed"} <= statuses, statuses
        events = [verify(hook["secret"], r.headers, r.body) for r in receiver.requests[2:]]
        assert {e["resource"]["id"] for e in events} == {task["id"]}
    assert "webhook-sender" in runtime.output(tail=10**7)  # in the banner: the runner runs it
