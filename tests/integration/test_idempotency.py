"""`Idempotency-Key` on POST /tasks against real Postgres: replays, conflicts, scope, expiry, races."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from chalicelib.db.models import Agent, IdempotencyKey, OutboxMessage, Task
from chalicelib.db.session import Database
from chalicelib.db.types import utcnow
from chalicelib.schemas.tasks import TaskCreate
from chalicelib.services.idempotency import IdempotencyStore, idempotent_request
from chalicelib.services.meta import RequestMeta
from chalicelib.services.tasks import TaskService
from tests.integration.conftest import Api, FakeContext
from tests.integration.test_api_auth import assert_envelope
from tests.integration.test_api_tasks import SCHEMA_TASK, receive_all


def post(api: Api, key: str | None, agent_id: str, **overrides: Any) -> Any:
    body = {"agent_id": agent_id, "title": "check", "input_data": SCHEMA_TASK, **overrides}
    return api.call("POST", "/tasks", body, headers={"Idempotency-Key": key} if key is not None else None)


def count(db: Database, model: Any) -> int:
    with db.read() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_same_key_and_body_replays_the_original_response(api: Api, aws: Any, db: Database) -> None:
    api.signup()
    agent = api.agent()
    first = post(api, "order-42", agent["id"])
    assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
    assert first.json_body["status"] == "pending"
    again = post(api, "order-42", agent["id"])
    assert again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == f"/tasks/{first.json_body['id']}"
    # the original response, not today's state of the task (which the relay has moved to `queued`)
    assert again.json_body == first.json_body
    assert api.call("GET", f"/tasks/{first.json_body['id']}").json_body["status"] == "queued"
    assert count(db, Task) == 1 and count(db, OutboxMessage) == 1
    assert len(receive_all(aws)) == 1  # published once


def test_same_key_with_another_body_is_409(api: Api, db: Database) -> None:
    api.signup()
    agent = api.agent()
    assert post(api, "k1", agent["id"]).status_code == 202
    error = assert_envelope(post(api, "k1", agent["id"], title="something else"), 409, "IDEMPOTENCY_KEY_REUSED")
    assert error["details"]["header"] == "Idempotency-Key"
    assert count(db, Task) == 1


def test_reformatted_body_is_the_same_request(api: Api) -> None:
    api.signup()
    agent = api.agent()
    first = post(api, "k2", agent["id"], priority="normal")
    raw = ('{ "input_data": {"payload": {"name": "x"}, "schema": {"required": ["name"], "type": "object"}},'
           f' "title": "check", "agent_id": "{agent["id"]}" }}')
    again = api.call("POST", "/tasks", raw=raw, headers={"Idempotency-Key": "k2"})
    assert again.status_code == 202 and again.json_body["id"] == first.json_body["id"]


def test_keys_are_scoped_to_the_user(api: Api, other_api: Api, db: Database) -> None:
    api.signup()
    mine = post(api, "shared-key", api.agent()["id"]).json_body
    other_api.signup()
    theirs = post(other_api, "shared-key", other_api.agent()["id"])
    assert theirs.status_code == 202 and "Idempotent-Replayed" not in theirs.headers
    assert theirs.json_body["id"] != mine["id"]
    assert count(db, Task) == 2


@pytest.mark.parametrize("key", ["", " ", "a" * 256, "caf\u00e9", "tab\there", "two words", "line\nbreak"])
def test_malformed_keys_are_422(api: Api, db: Database, key: str) -> None:
    api.signup()
    agent = api.agent()
    error = assert_envelope(post(api, key, agent["id"]), 422, "VALIDATION_ERROR")
    assert [e["loc"] for e in error["details"]["errors"]] == [["header", "Idempotency-Key"]]
    assert count(db, Task) == 0


def test_the_longest_key_is_accepted(api: Api) -> None:
    api.signup()
    agent = api.agent()
    key = "~!" * 127 + "z"
    assert post(api, key, agent["id"]).status_code == 202
    assert post(api, key, agent["id"]).headers["Idempotent-Replayed"] == "true"


def test_an_expired_key_creates_anew_and_the_relay_purges_expired_keys(api: Api, container: Any,
                                                                       db: Database) -> None:
    api.signup()
    agent = api.agent()
    first = post(api, "daily", agent["id"]).json_body
    later = utcnow() + timedelta(seconds=container.settings.idempotency_key_ttl_seconds + 1)
    container.idempotency.clock = lambda: later
    second = post(api, "daily", agent["id"], title="a new day")  # even another body: the old key is gone
    assert second.status_code == 202 and second.json_body["id"] != first["id"]
    assert count(db, IdempotencyKey) == 1

    post(api, "other", agent["id"])
    container.idempotency.clock = lambda: later + timedelta(days=2)
    from functions.outbox_relay import handler

    handler({}, FakeContext())  # the scheduled relay purges expired keys on every sweep
    assert count(db, IdempotencyKey) == 0


class SlowQuotas:
    """Holds each creating transaction open a moment, after the key is claimed: the requests overlap."""

    def check_tasks_today(self, session: Any, user_id: uuid.UUID, now: Any) -> None:
        time.sleep(0.2)

    def check_tasks_used(self, used: int, now: Any) -> None:  # a managed agent's task: the count came with its lane
        time.sleep(0.2)


def test_concurrent_requests_with_one_key_create_exactly_one_task(api: Api, db: Database) -> None:
    api.signup()
    agent_id = uuid.UUID(api.agent()["id"])
    with db.read() as session:
        user_id = session.scalar(select(Agent.user_id).where(Agent.id == agent_id))
    service = TaskService(db, quotas=SlowQuotas(), idempotency=IdempotencyStore(db))  # type: ignore[arg-type]
    req = TaskCreate(agent_id=agent_id, title="once", input_data=SCHEMA_TASK)
    key = idempotent_request("race-1", "POST /tasks", req.model_dump(mode="json"))
    barrier = threading.Barrier(8)
    results: list[Any] = []
    errors: list[BaseException] = []

    def call() -> None:
        barrier.wait()
        try:
            results.append(service.create_idempotent(user_id, req, RequestMeta(), key))
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(results) == 8
    assert len({r.task_id for r in results}) == 1
    assert sorted(r.replayed for r in results) == [False] + [True] * 7
    assert count(db, Task) == 1 and count(db, OutboxMessage) == 1


def test_a_failed_first_request_releases_the_key(api: Api, db: Database) -> None:
    api.signup()
    agent = api.agent()
    assert_envelope(post(api, "retry-me", agent["id"], input_data={"payload": 1}), 422, "VALIDATION_ERROR")
    assert count(db, IdempotencyKey) == 0
    assert post(api, "retry-me", agent["id"]).status_code == 202


def test_the_openapi_document_describes_the_idempotency_key(api: Api) -> None:
    op = api.call("GET", "/openapi.json", token="").json_body["paths"]["/tasks"]["post"]
    [param] = [p for p in op["parameters"] if p["name"] == "Idempotency-Key"]
    assert param["in"] == "header" and param["required"] is False
    assert param["schema"]["maxLength"] == 255
    assert "Idempotent-Replayed" in op["responses"]["202"]["headers"]
    assert "409" in op["responses"] and "422" in op["responses"]


def test_redis_down_still_replays_and_creates_no_duplicate(api: Api, settings: Any, db: Database, aws: Any) -> None:
    """Postgres is the truth: with Redis unreachable, a retried request still finds its key."""
    import redis

    from chalicelib.container import Container, set_container

    api.signup()
    agent = api.agent()
    first = post(api, "no-redis", agent["id"])
    dead = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    set_container(Container(settings, database=db, redis_client=dead))
    try:
        again = post(api, "no-redis", agent["id"])
        assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
        assert again.json_body["id"] == first.json_body["id"]
        assert post(api, "no-redis-2", agent["id"]).status_code == 202
        assert post(api, "no-redis-2", agent["id"]).headers["Idempotent-Replayed"] == "true"
    finally:
        set_container(None)
    assert count(db, Task) == 2
