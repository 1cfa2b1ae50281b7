"""Dependencies down: Postgres or Redis unreachable (a cut proxy, tests/fault_proxy.py) never yields a 500.

GIVEN a signed-in user WHEN Postgres goes away THEN every call that needs it answers 503 DEPENDENCY_UNAVAILABLE in
the error envelope with Retry-After, and the first call after it returns succeeds (the pool drops dead connections).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

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
