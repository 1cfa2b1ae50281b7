"""Dependencies down: Postgres or Redis unreachable (a cut proxy, tests/fault_proxy.py) never yields a 500.

GIVEN a signed-in user WHEN Postgres goes away THEN every call that needs it answers 503 DEPENDENCY_UNAVAILABLE in
the error envelope with Retry-After, and the first call after it returns succeeds (the pool drops dead connections).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from tests.integration.conftest import Api
from tests.integration.faults_support import OUTAGE_SECONDS, Faulty
from tests.integration.test_api_tasks import create_task


def _calls(api: Api, agent_id: str, task_id: str) -> list[tuple[str, str, Any]]:
    return [("GET", "/tasks", None), ("GET", f"/tasks/{task_id}", None), ("GET", "/agents", None),
            ("GET", f"/agents/{agent_id}", None), ("GET", "/audit-logs", None),
            ("POST", "/tasks", {"agent_id": agent_id, "title": "during the outage",
                                "input_data": {"schema": {}, "payload": 1}})]


def test_postgres_unreachable_is_503_in_the_envelope_and_recovers_on_the_first_call(
        faulty: Faulty, faulty_client: Any) -> None:
    api = Api(faulty_client)
    api.signup()
    agent = api.agent()
    task = create_task(api, agent["id"]).json_body
    statuses: Counter[int] = Counter()
    with faulty.pg.outage():
        deadline = time.monotonic() + min(OUTAGE_SECONDS, 3.0)
        while time.monotonic() < deadline:
            for method, path, body in _calls(api, agent["id"], task["id"]):
                r = api.call(method, path, body)
                statuses[r.status_code] += 1
                if r.status_code == 200 and method == "GET":  # served from the cache: needs no database
                    continue
                if r.status_code == 429:  # the rate limiter (Redis) still works while Postgres is down
                    continue
                assert r.status_code == 503, (method, path, r.status_code, r.json_body)
                assert r.json_body["error"]["code"] == "DEPENDENCY_UNAVAILABLE"
                assert r.json_body["error"]["details"] == {"dependency": "database"}
                assert int(r.headers["Retry-After"]) >= 1
            time.sleep(0.1)
    # The first call after the database is back succeeds: no dead pooled connection is handed out.
    for method, path, body in _calls(api, agent["id"], task["id"]):
        r = api.call(method, path, body)
        assert r.status_code < 300, (method, path, r.status_code, r.json_body)
    assert statuses[503] > 0 and set(statuses) <= {200, 429, 503}


@pytest.mark.rate_limited
def test_redis_unreachable_degrades_as_documented_with_no_500_and_no_stale_data(
        faulty: Faulty, faulty_client: Any) -> None:
    """docs/faults.md: the rate limiter's general buckets fail open, sign-in fails closed (503), the cache is
    bypassed (reads go to Postgres, so a write during the outage is visible at once), sessions are checked
    against Postgres."""
    api = Api(faulty_client)
    user = api.signup()
    agent = api.agent()
    statuses: Counter[int] = Counter()
    with faulty.redis.outage():
        deadline = time.monotonic() + min(OUTAGE_SECONDS, 3.0)
        round_no = 0
        while time.monotonic() < deadline:
            round_no += 1
            created = create_task(api, agent["id"])
            statuses[created.status_code] += 1
            assert created.status_code == 202, created.json_body
            got = api.call("GET", f"/tasks/{created.json_body['id']}")
            assert got.status_code == 200 and got.json_body["id"] == created.json_body["id"]
            renamed = api.call("PUT", f"/agents/{agent['id']}", {"name": f"renamed-{round_no}"})
            assert renamed.status_code == 200, renamed.json_body
            read = api.call("GET", f"/agents/{agent['id']}")
            assert read.status_code == 200 and read.json_body["name"] == f"renamed-{round_no}"  # never stale
            login = api.call("POST", "/auth/login", {"username": user["username"], "password": "correct horse battery"},
                             token="")
            statuses[login.status_code] += 1
            assert login.status_code == 503 and login.json_body["error"]["code"] == "DEPENDENCY_UNAVAILABLE"
            assert int(login.headers["Retry-After"]) >= 1
            time.sleep(0.2)
    time.sleep(0.6)  # the Redis breaker (0.5 s here) closes
    read = api.call("GET", f"/agents/{agent['id']}")
    assert read.status_code == 200 and read.json_body["name"] == f"renamed-{round_no}"
    login = api.call("POST", "/auth/login", {"username": user["username"], "password": "correct horse battery"},
                     token="")
    assert login.status_code == 200, login.json_body
    assert not any(500 <= s and s != 503 for s in statuses)


def test_postgres_black_holed_answers_503_within_the_connect_timeout_not_a_hang(
        faulty: Faulty, faulty_client: Any) -> None:
    """GIVEN a database host that accepts TCP and never answers WHEN a call needs it THEN 503 after about
    YMERA_DB_CONNECT_TIMEOUT_SECONDS (2 s here), not minutes."""
    api = Api(faulty_client)
    api.signup()
    agent = api.agent()
    faulty.pg.stall()
    try:
        started = time.monotonic()
        r = create_task(api, agent["id"])
        elapsed = time.monotonic() - started
    finally:
        faulty.pg.restore()
    assert r.status_code == 503 and r.json_body["error"]["code"] == "DEPENDENCY_UNAVAILABLE"
    assert elapsed < 2 * faulty.container.settings.db_connect_timeout_seconds + 1, elapsed
    assert create_task(api, agent["id"]).status_code == 202
