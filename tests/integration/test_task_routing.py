"""POST /tasks with only an agent type: the routing rule on real Postgres, over the API."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import update

from chalicelib.db.models import Agent, Task
from tests.integration.conftest import Api
from tests.integration.test_api_auth import assert_envelope
from tests.integration.worker_helpers import external_agent, new_task


def make_agent(api: Api, name: str, **fields: Any) -> str:
    r = api.call("POST", "/agents", {"name": name, "type": "validation", **fields})
    assert r.status_code == 201, r.json_body
    return str(r.json_body["id"])


def set_quality(db: Any, agent_id: str, alpha: float, beta: float) -> None:
    with db.transaction() as session:
        session.execute(update(Agent).where(Agent.id == uuid.UUID(agent_id))
                        .values(quality_alpha=alpha, quality_beta=beta))


def occupy(api: Api, db: Any, agent_id: str, n: int) -> None:
    """Give the agent n tasks in flight (as a consumer would have claimed them)."""
    ids = [uuid.UUID(new_task(api, agent_id=agent_id).json_body["id"]) for _ in range(n)]
    with db.transaction() as session:
        session.execute(update(Task).where(Task.id.in_(ids)).values(status="processing"))


def routed(api: Api) -> str:
    r = new_task(api, agent_type="validation")
    assert r.status_code == 202, r.json_body
    return str(r.json_body["agent_id"])


def test_routing_prefers_quality_then_fewer_tasks_in_flight(api: Api, db: Any) -> None:
    api.signup()
    plain = make_agent(api, "plain")
    rated = make_agent(api, "rated")
    set_quality(db, rated, alpha=8, beta=2)  # mean 0.8 vs 0.5
    occupy(api, db, rated, 3)
    assert routed(api) == rated  # quality first, even while busier

    set_quality(db, rated, alpha=1, beta=1)  # now equally good: the lighter one wins
    assert routed(api) == plain


def test_a_burst_spreads_over_equally_good_idle_agents(api: Api) -> None:
    api.signup()
    first, second = make_agent(api, "first"), make_agent(api, "second")
    # Nothing is in flight; the waiting backlog breaks the tie, so neither agent gets everything.
    assert sorted(routed(api) for _ in range(4)) == sorted([first, first, second, second])


def test_no_agent_with_capacity_is_409_with_the_reason(api: Api, db: Any) -> None:
    api.signup()
    error = assert_envelope(new_task(api, agent_type="validation"), 409, "NO_AGENT_AVAILABLE")
    assert error["details"] == {"agent_type": "validation", "agents": 0, "active": 0, "at_capacity": 0}

    busy = make_agent(api, "busy", max_concurrency=1)
    occupy(api, db, busy, 1)
    idle_but_off = make_agent(api, "off")
    api.call("PUT", f"/agents/{idle_but_off}", {"status": "inactive"})
    error = assert_envelope(new_task(api, agent_type="validation"), 409, "NO_AGENT_AVAILABLE")
    assert error["details"] == {"agent_type": "validation", "agents": 2, "active": 1, "at_capacity": 1}

    api.call("PUT", f"/agents/{busy}", {"max_concurrency": 2})  # room again
    assert routed(api) == busy


def test_routing_only_ever_picks_the_callers_agents(api: Api, other_api: Api) -> None:
    api.signup()
    mine = make_agent(api, "mine")
    other_api.signup()
    assert_envelope(new_task(other_api, agent_type="validation"), 409, "NO_AGENT_AVAILABLE")
    assert routed(api) == mine


def test_routed_to_an_external_agent_the_task_waits_for_its_lease(api: Api) -> None:
    api.signup()
    agent, worker = external_agent(api, agent_type="examination")
    r = new_task(api, agent_type="examination", input_data={"source": "x = 1\n"})
    assert r.status_code == 202 and r.json_body["agent_id"] == agent["id"] and r.json_body["status"] == "queued"
    assert [t["id"] for t in worker.lease().json_body["tasks"]] == [r.json_body["id"]]


def test_exactly_one_of_agent_id_and_agent_type(api: Api) -> None:
    api.signup()
    agent = make_agent(api, "a")
    assert_envelope(new_task(api, agent_id=agent, agent_type="validation"), 422, "VALIDATION_ERROR")
    assert_envelope(new_task(api), 422, "VALIDATION_ERROR")
    error = assert_envelope(new_task(api, agent_type="wizard"), 422, "VALIDATION_ERROR")
    assert error["details"]["errors"][0]["loc"] == ["agent_type"]
    # The routed agent's input schema still applies.
    error = assert_envelope(new_task(api, agent_type="validation", input_data={"payload": 1}), 422,
                            "VALIDATION_ERROR")
    assert error["details"]["errors"][0]["loc"] == ["input_data", "schema"]
