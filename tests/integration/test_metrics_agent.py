"""The metrics agent on Postgres (percentile_cont in SQL) through the real consumer, and its EMF output.

Seeded with tests/unit/test_agent_metrics.py's data: the SQL path must give the same exact numbers
as the Python path it checks on SQLite.
"""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from chalicelib.db.models import User
from chalicelib.db.types import utcnow
from tests.integration.conftest import Api
from tests.integration.test_api_auth import assert_envelope
from tests.integration.test_consumer import message, run
from tests.unit.test_agent_metrics import BY_TYPE, OVERALL, _assert_valid_emf, seed


def me(db: Any, username: str) -> User:
    with db.read() as session:
        user = session.scalar(select(User).where(User.username == username))
        assert user is not None
        return user


def measure(api: Api, input_data: dict[str, Any], mid: str = "x1") -> dict[str, Any]:
    agent = api.call("POST", "/agents", {"name": "meter", "type": "metrics"})
    agent = agent.json_body if agent.status_code == 201 else api.call("GET", "/agents").json_body["items"][0]
    task = api.call("POST", "/tasks", {"agent_id": agent["id"], "title": "metrics", "input_data": input_data})
    assert task.status_code == 202, task.json_body
    assert run([(mid, message(task.json_body["id"], "metrics"))], "metrics") == {"batchItemFailures": []}
    return dict(api.call("GET", f"/tasks/{task.json_body['id']}").json_body)


def emf_lines(out: str) -> list[dict[str, Any]]:
    docs = [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"_aws"' in line]
    return [d for d in docs if "scope" in d]  # ours (the consumer's own EMF has no scope dimension)


def test_seeded_tasks_give_exact_percentiles_and_valid_emf(api: Api, db: Any,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    user = api.signup()
    owner = me(db, user["username"])
    with db.transaction() as session:
        seed(session, utcnow(), me=session.get(User, owner.id))
    capsys.readouterr()

    task = measure(api, {"window_minutes": 60, "group_by": ["agent_type", "agent_id"]})
    assert task["status"] == "completed", task
    output = task["result"]["output_data"]
    assert output["scope"] == "own" and output["window"]["minutes"] == 60
    expected = copy.deepcopy(OVERALL)
    expected["counts_by_status"]["processing"] = 1  # the metrics task itself, running while it measures
    assert output["overall"] == expected
    by_type = {g["agent_type"]: g for g in output["groups"]["agent_type"]}
    for agent_type, numbers in BY_TYPE.items():
        for key, value in numbers.items():
            assert by_type[agent_type][key] == value, (agent_type, key)
    assert by_type["metrics"]["counts_by_status"]["processing"] == 1
    assert {g["agent_type"] for g in output["groups"]["agent_id"]} == {"validation", "examination", "metrics"}

    docs = emf_lines(capsys.readouterr().out)
    assert output["emf_documents"] == len(docs) == 1 + len(by_type)
    for doc in docs:
        _assert_valid_emf(doc)
        assert doc["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "YMERA"
        assert doc["scope"] == str(owner.id)
    overall = next(d for d in docs if "agent_type" not in d)
    assert (overall["LatencyP50"], overall["LatencyP99"], overall["ProcessingTimeP90"]) == (3000.0, 9760.0, 7260.0)


def test_admins_measure_everyone_and_users_may_not(api: Api, db: Any) -> None:
    user = api.signup()
    owner = me(db, user["username"])
    with db.transaction() as session:
        seed(session, utcnow(), me=session.get(User, owner.id))
    forbidden = measure(api, {"scope": "all"}, "x1")
    assert forbidden["status"] == "failed" and forbidden["error"]["code"] == "SCOPE_FORBIDDEN"
    with db.transaction() as session:
        session.execute(update(User).where(User.id == owner.id).values(role="admin"))
    everyone = measure(api, {}, "x2")["result"]["output_data"]
    assert everyone["scope"] == "all"
    assert everyone["overall"]["completed"] == 6  # the other user's completed task is counted too
    mine = measure(api, {"scope": "own", "group_by": []}, "x3")["result"]["output_data"]
    # my 5 seeded tasks and the metrics task that just completed; not the other user's
    assert mine["overall"]["completed"] == 6 and mine["groups"] == {}
    assert mine["overall"]["finished"]["failed"] == 2  # the seeded one and the forbidden metrics task


def test_an_invalid_window_is_422(api: Api) -> None:
    api.signup()
    agent = api.agent("metrics")
    r = api.call("POST", "/tasks", {"agent_id": agent["id"], "title": "m",
                                    "input_data": {"window_minutes": 0, "group_by": ["user"]}})
    locs = {tuple(e["loc"]) for e in assert_envelope(r, 422, "VALIDATION_ERROR")["details"]["errors"]}
    assert ("input_data", "window_minutes") in locs and ("input_data", "group_by", "0") in locs


def test_the_window_excludes_older_tasks(api: Api, db: Any) -> None:
    user = api.signup()
    owner = me(db, user["username"])
    with db.transaction() as session:
        seed(session, utcnow() - timedelta(minutes=45), me=session.get(User, owner.id))
    # Shifted 45 minutes back, only the seed's pending task (created 55 minutes ago) is in the last hour;
    # everything else was created or finished earlier.
    overall = measure(api, {"window_minutes": 60})["result"]["output_data"]["overall"]
    assert overall["counts_by_status"] == {"pending": 1, "queued": 0, "processing": 1, "completed": 0, "failed": 0,
                                           "cancelled": 0, "timed_out": 0}
    assert overall["finished"] == {"completed": 0, "failed": 0, "cancelled": 0, "timed_out": 0}
    assert overall["error_rate"] is None and overall["throughput_per_minute"] == 0
    assert overall["latency_ms"]["end_to_end"] == {"p50": None, "p90": None, "p99": None}
