"""A cached `GET /tasks/{id}` of a completed task makes exactly one Redis round trip (the rate-limit script,
which also reads the session/revocation keys), no SQL, and still sees a logout on the very next request.
Its body, rendered once for the cached task, is the same JSON a fresh read returns."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.config import Settings
from chalicelib.container import Container, set_container
from chalicelib.db.session import Database
from tests.integration.conftest import Api
from tests.integration.redis_trips import CountingRedis
from tests.integration.test_api_tasks import create_task
from tests.integration.test_consumer import message, run


@pytest.fixture
def counting(redis_url: str) -> Iterator[CountingRedis]:
    client = CountingRedis.connect(redis_url)
    yield client
    client.close()


@pytest.fixture
def container(settings: Settings, db: Database, aws: Any, counting: CountingRedis) -> Iterator[Container]:
    c = Container(settings, database=db, redis_client=counting)
    set_container(c)
    yield c
    set_container(None)


def test_a_cached_completed_task_costs_one_redis_round_trip_and_a_logout_still_holds(
        api: Api, counting: CountingRedis) -> None:
    login = api.signup()
    task = create_task(api, api.agent()["id"]).json_body
    assert run([("m1", message(task["id"]))]) == {"batchItemFailures": []}
    first = api.call("GET", f"/tasks/{task['id']}")  # loads and caches the final task
    assert first.status_code == 200 and first.json_body["status"] == "completed"

    counting.reset_counts()
    again = [api.call("GET", f"/tasks/{task['id']}") for _ in range(3)]
    assert [r.json_body for r in again] == [first.json_body] * 3
    assert counting.trips == [("EVALSHA",)] * 3  # the rate-limit script carries the session lookup
    assert again[0].headers["X-RateLimit-Limit"]

    r = api.call("POST", "/auth/logout", {"refresh_token": login["refresh_token"]})
    assert r.status_code in (200, 204), r.json_body
    assert api.call("GET", f"/tasks/{task['id']}").status_code == 401
