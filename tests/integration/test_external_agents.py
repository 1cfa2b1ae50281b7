"""External agents over the API (real Postgres): the key, worker authentication, leasing,
completing and failing, who may report on a task, the owner's status view, and SQS staying out of it."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from chalicelib.db.models import Agent, AuditLog, OutboxMessage, Task, TaskResult
from functions.outbox_relay import handler as relay_handler
from tests.integration.conftest import Api, FakeContext
from tests.integration.test_api_auth import assert_envelope
from tests.integration.test_api_tasks import receive_all
from tests.integration.worker_helpers import external_agent, new_task


def test_an_external_agent_gets_its_key_once_and_only_its_hash_is_stored(api: Api, db: Any) -> None:
    api.signup()
    agent, _ = external_agent(api, max_concurrency=3)
    key = agent["api_key"]
    assert key.startswith("ymk_") and agent["mode"] == "external" and agent["max_concurrency"] == 3
    shown = api.call("GET", f"/agents/{agent['id']}").json_body
    assert "api_key" not in shown and shown["mode"] == "external"
    assert key not in json.dumps(api.call("GET", "/agents").json_body)
    with db.read() as session:
        assert session.scalar(select(Agent.api_key_hash)) == hashlib.sha256(key.encode()).hexdigest()
        assert key not in json.dumps([row.details for row in session.scalars(select(AuditLog))])
    managed = api.call("POST", "/agents", {"name": "m", "type": "validation"}).json_body
    assert managed["mode"] == "managed" and "api_key" not in managed


def test_a_worker_leases_completes_and_the_owner_sees_the_result(api: Api) -> None:
    api.signup()
    agent, worker = external_agent(api)
    low = new_task(api, agent_id=agent["id"], priority="low").json_body
    urgent = new_task(api, agent_id=agent["id"], priority="critical").json_body
    assert low["status"] == "queued"  # waiting for a lease, not for SQS

    r = worker.lease(max_tasks=1)
    assert r.status_code == 200
    assert [t["id"] for t in r.json_body["tasks"]] == [urgent["id"]]  # most urgent first
    leased = r.json_body["tasks"][0]
    assert leased["attempts"] == 1 and leased["input_data"] == urgent["input_data"]
    expires = datetime.fromisoformat(leased["lease_expires_at"])
    assert timedelta(seconds=55) < expires - datetime.now(UTC) <= timedelta(seconds=60)
    assert api.call("GET", f"/tasks/{urgent['id']}").json_body["status"] == "processing"

    r = worker.complete(urgent["id"], {"words": 3}, metrics={"tokens": 7}, attempt=1)
    assert r.status_code == 200 and r.json_body["status"] == "completed"
    done = api.call("GET", f"/tasks/{urgent['id']}").json_body
    assert done["status"] == "completed" and done["result"]["output_data"] == {"words": 3}
    assert done["result"]["metrics"]["tokens"] == 7 and done["result"]["metrics"]["duration_ms"] >= 0
    error = assert_envelope(worker.complete(urgent["id"], {"words": 4}), 409, "LEASE_NOT_HELD")
    assert error["details"]["status"] == "completed"
    assert api.call("GET", f"/tasks/{urgent['id']}").json_body["result"]["output_data"] == {"words": 3}


def test_fail_retryable_goes_back_to_the_queue_and_fail_is_final(api: Api) -> None:
    api.signup()
    agent, worker = external_agent(api)
    task = new_task(api, agent_id=agent["id"]).json_body
    worker.lease()
    r = worker.fail(task["id"], code="UPSTREAM_DOWN", retryable=True)
    assert r.status_code == 200 and r.json_body["status"] == "queued"
    again = worker.lease().json_body["tasks"]
    assert [(t["id"], t["attempts"]) for t in again] == [(task["id"], 2)]
    r = worker.fail(task["id"], code="BAD_INPUT")
    assert r.json_body["status"] == "failed"
    failed = api.call("GET", f"/tasks/{task['id']}").json_body
    assert failed["status"] == "failed" and failed["attempts"] == 2
    assert failed["error"] == {"code": "BAD_INPUT", "message": "it broke", "details": {"why": "test"}}
    assert failed["result"]["status"] == "failed"
    assert_envelope(worker.call("POST", f"/tasks/{task['id']}/fail", {"error": {"code": "x y"}}),
                    422, "VALIDATION_ERROR")


def test_lease_respects_max_concurrency(api: Api) -> None:
    api.signup()
    agent, worker = external_agent(api, max_concurrency=2)
    ids = [new_task(api, agent_id=agent["id"]).json_body["id"] for _ in range(3)]
    first = worker.lease(max_tasks=10).json_body
    assert len(first["tasks"]) == 2 and first["in_flight"] == 2 and first["max_concurrency"] == 2
    assert worker.lease(max_tasks=10).json_body["tasks"] == []
    worker.complete(first["tasks"][0]["id"])
    assert [t["id"] for t in worker.lease(max_tasks=10).json_body["tasks"]] == [ids[2]]
    assert_envelope(worker.lease(max_tasks=11), 422, "VALIDATION_ERROR")
    assert_envelope(worker.lease(wait_seconds=21), 422, "VALIDATION_ERROR")


def test_only_the_agent_holding_the_lease_may_report(api: Api, other_api: Api) -> None:
    api.signup()
    agent, holder = external_agent(api)
    _, sibling = external_agent(api)  # same owner, another agent
    other_api.signup()
    _, stranger = external_agent(other_api)
    task = new_task(api, agent_id=agent["id"]).json_body
    waiting = new_task(api, agent_id=agent["id"]).json_body
    holder.lease()

    assert_envelope(sibling.complete(task["id"], {"x": 1}), 404, "NOT_FOUND")
    assert_envelope(stranger.fail(task["id"]), 404, "NOT_FOUND")
    # A valid key presented for the holder's id is still the sibling's key: no match.
    assert_envelope(sibling.complete(task["id"], agent_id=holder.agent_id), 401, "AUTHENTICATION_ERROR")
    assert_envelope(holder.complete(waiting["id"]), 409, "LEASE_NOT_HELD")  # its own, but not leased
    assert_envelope(holder.complete(task["id"], attempt=2), 409, "LEASE_NOT_HELD")  # not this lease
    assert api.call("GET", f"/tasks/{task['id']}").json_body["status"] == "processing"
    assert holder.complete(task["id"], {"ok": True}).status_code == 200


def test_worker_routes_accept_the_agent_key_and_nothing_else(api: Api, db: Any) -> None:
    api.signup()
    agent, worker = external_agent(api)
    managed = api.agent()
    assert worker.lease().status_code == 200
    assert_envelope(worker.lease(key="ymk_" + "A" * 43), 401, "AUTHENTICATION_ERROR")
    assert_envelope(worker.lease(key=""), 401, "AUTHENTICATION_ERROR")
    # The owner's JWT in place of the key: refused, with or without a key header.
    assert_envelope(worker.lease(key="", token=api.token or ""), 401, "AUTHENTICATION_ERROR")
    assert_envelope(worker.call("POST", f"/agents/{agent['id']}/lease", {}, key=api.token or ""), 401,
                    "AUTHENTICATION_ERROR")
    assert_envelope(worker.call("POST", "/agents/not-a-uuid/heartbeat"), 401, "AUTHENTICATION_ERROR")
    assert_envelope(worker.call("POST", f"/agents/{managed['id']}/lease"), 401, "AUTHENTICATION_ERROR")
    unknown = assert_envelope(worker.call("POST", f"/agents/{uuid.uuid4()}/lease"), 401, "AUTHENTICATION_ERROR")
    wrong = assert_envelope(worker.lease(key="ymk_wrong"), 401, "AUTHENTICATION_ERROR")
    assert unknown["message"] == wrong["message"]  # nothing tells an unknown agent from a wrong key

    rotated = api.call("POST", f"/agents/{agent['id']}/api-key")
    assert rotated.status_code == 200 and rotated.json_body["api_key"] != worker.key
    assert_envelope(worker.heartbeat(), 401, "AUTHENTICATION_ERROR")  # the old key died at once
    assert worker.heartbeat(key=rotated.json_body["api_key"]).status_code == 200
    assert_envelope(api.call("POST", f"/agents/{managed['id']}/api-key"), 409, "CONFLICT")
    assert_envelope(worker.call("POST", f"/agents/{agent['id']}/api-key"), 401, "AUTHENTICATION_ERROR")

    api.call("DELETE", f"/agents/{agent['id']}")
    assert_envelope(worker.heartbeat(key=rotated.json_body["api_key"]), 401, "AUTHENTICATION_ERROR")


def test_inactive_agents_cannot_lease_but_may_heartbeat(api: Api) -> None:
    api.signup()
    agent, worker = external_agent(api)
    api.call("PUT", f"/agents/{agent['id']}", {"status": "inactive"})
    assert_envelope(worker.lease(), 409, "AGENT_INACTIVE")
    assert worker.heartbeat().status_code == 200


def test_external_tasks_never_reach_sqs(api: Api, aws: Any, db: Any) -> None:
    api.signup()
    agent, worker = external_agent(api)
    by_id = new_task(api, agent_id=agent["id"]).json_body
    by_type = new_task(api, agent_type="validation").json_body  # the only validation agent is external
    assert by_type["agent_id"] == agent["id"]
    assert relay_handler({}, FakeContext()) == {"published": 0, "failed": 0}
    assert receive_all(aws) == []
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0

    # Any other producer that writes an outbox row for an external task: the relay settles it unpublished.
    with db.transaction() as session:
        session.add(OutboxMessage(aggregate_id=uuid.UUID(by_id["id"]), destination="validation",
                                  payload={"task_id": by_id["id"], "agent_type": "validation"}))
    assert relay_handler({}, FakeContext()) == {"published": 0, "failed": 0}
    assert receive_all(aws) == []
    assert {t["id"] for t in worker.lease(max_tasks=5).json_body["tasks"]} == {by_id["id"], by_type["id"]}


def test_status_shows_in_flight_leases_and_counts_to_the_owner_only(api: Api, other_api: Api, db: Any) -> None:
    api.signup()
    agent, worker = external_agent(api)
    for _ in range(3):
        new_task(api, agent_id=agent["id"])
    leased = worker.lease(max_tasks=2).json_body["tasks"]
    worker.complete(leased[0]["id"])
    r = api.call("GET", f"/agents/{agent['id']}/status")
    assert r.status_code == 200
    status = r.json_body
    assert status["mode"] == "external" and status["status"] == "active" and status["last_heartbeat"]
    assert [(t["task_id"], t["lease_expires_at"]) for t in status["in_flight"]] == [
        (leased[1]["id"], leased[1]["lease_expires_at"])]
    assert status["task_counts"]["completed"] == 1 and status["task_counts"]["processing"] == 1
    assert status["task_counts"]["queued"] == 1 and status["task_counts"]["failed"] == 0
    other_api.signup()
    assert_envelope(other_api.call("GET", f"/agents/{agent['id']}/status"), 404, "NOT_FOUND")
    assert_envelope(worker.call("GET", f"/agents/{agent['id']}/status"), 401, "AUTHENTICATION_ERROR")
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(TaskResult)) == 1
        assert session.scalar(select(func.count()).select_from(Task).where(Task.lease_expires_at.is_not(None))) == 1
