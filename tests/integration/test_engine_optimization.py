"""The optimization engine: the routing rule's decision breakdown and Little's-law concurrency per queue."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib import capacity
from chalicelib.db.session import Database
from chalicelib.domain.agents import AGENT_TYPES
from chalicelib.engines.concurrency import headroom_instances
from chalicelib.engines.optimization import route
from tests.integration import engine_seed as es


def test_the_example_runs_on_a_real_database(db: Database, settings: Any) -> None:
    uid = es.user(db)
    es.agent(db, uid, "validation")
    out = es.run("optimization", es.ctx(db, settings, uid))
    assert out["routing"][0]["agent_type"] == "validation" and out["routing"][0]["chosen"] is not None


def test_the_breakdown_names_the_rules_choice_and_why_others_lost(db: Database, settings: Any) -> None:
    uid = es.user(db)
    best = es.agent(db, uid, "validation", "best", quality_alpha=3.0, quality_beta=1.0)
    plain = es.agent(db, uid, "validation", "plain")
    es.agent(db, uid, "validation", "off", status="offline", quality_alpha=9.0, quality_beta=1.0)
    full = es.agent(db, uid, "validation", "full", max_concurrency=1, quality_alpha=9.0, quality_beta=1.0)
    es.tasks(db, uid, full, "validation", 1, status="processing")

    out = es.run("optimization", es.ctx(db, settings, uid), {"agent_type": "validation"})
    [decision] = out["routing"]
    assert decision["chosen"] == str(best) and decision["chosen_name"] == "best"
    assert "quality" in decision["why"] and "plain" in decision["why"]
    assert (decision["agents"], decision["active"], decision["at_capacity"]) == (4, 3, 1)
    rows = {r["name"]: r for r in decision["candidates"]}
    assert rows["best"]["rank"] == 1 and rows["best"]["quality"] == 0.75
    assert rows["plain"]["rank"] == 2 and rows["plain"]["agent_id"] == str(plain)
    assert rows["off"]["eligible"] is False and "not active" in rows["off"]["excluded"]
    assert rows["full"]["eligible"] is False and "1 of 1" in rows["full"]["excluded"]
    # the breakdown is the rule the API routes with
    with db.read() as session:
        assert route(session, uid, "validation").id == best


def test_concurrency_follows_littles_law_and_the_connection_budget(db: Database, settings: Any) -> None:
    uid, other = es.user(db), es.user(db)
    v = es.agent(db, uid, "validation")
    s = es.agent(db, uid, "security")
    es.tasks(db, uid, v, "validation", 48, duration_seconds=30)  # 48 a day, 30 s each
    es.tasks(db, uid, v, "validation", 10, status="queued")
    es.tasks(db, uid, s, "security", 4, duration_seconds=60)
    es.tasks(db, uid, s, "security", 100, status="queued")
    # another user's flood is not the caller's figure
    ov = es.agent(db, other, "validation")
    es.tasks(db, other, ov, "validation", 500, status="queued")

    out = es.run("optimization", es.ctx(db, settings, uid), {"window_hours": 24, "drain_seconds": 300})
    rows = {r["agent_type"]: r for r in out["concurrency"]}
    val = rows["validation"]
    assert (val["backlog"], val["arrivals"], val["finished"]) == (10, 58, 48)
    assert val["mean_duration_seconds"] == 30.0
    assert abs(val["steady_state"] - 58 / 86400 * 30) < 1e-4 and val["drain"] == 1.0  # 10 x 30 / 300
    assert val["needed"] == 2 and val["recommended"] == 2 and val["bound"] == "little's law"
    sec = rows["security"]
    assert sec["drain"] == 20.0 and sec["needed"] == 21  # 100 x 60 / 300, plus a sliver of steady state
    headroom = headroom_instances()
    assert headroom == (capacity.DB_CONNECTION_BUDGET - capacity.consumer_connections(AGENT_TYPES)) // 2
    assert sec["recommended"] == sec["ceiling"] == 5 + headroom and sec["bound"] == "connection budget"
    budget = out["connection_budget"]
    assert budget["recommended_connections"] <= budget["budget"]


def test_queues_that_all_want_more_share_the_headroom(db: Database, settings: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # The deployed consumers use the whole budget since the lanes (chalicelib/capacity.py): give this run a
    # budget with room for 4 more instances, as a stage that raised it would have.
    monkeypatch.setattr(capacity, "DB_CONNECTION_BUDGET",
                        capacity.consumer_connections(AGENT_TYPES) + 4 * capacity.DB_CONNECTIONS_PER_INSTANCE)
    uid = es.user(db)
    for agent_type in ("security", "examination"):
        a = es.agent(db, uid, agent_type)
        es.tasks(db, uid, a, agent_type, 2, duration_seconds=60)
        es.tasks(db, uid, a, agent_type, 200, status="queued")
    out = es.run("optimization", es.ctx(db, settings, uid), {})
    rows = {r["agent_type"]: r for r in out["concurrency"]}
    headroom = headroom_instances()
    grown = sum(rows[t]["recommended"] - rows[t]["configured"] for t in ("security", "examination"))
    assert 0 < grown <= headroom
    assert rows["security"]["bound"] == "connection budget (shared)"
    assert out["connection_budget"]["recommended_connections"] <= out["connection_budget"]["budget"]


def test_no_finished_task_keeps_the_configured_maximum(db: Database, settings: Any) -> None:
    uid = es.user(db)
    es.agent(db, uid, "llm")
    [row] = es.run("optimization", es.ctx(db, settings, uid), {"agent_type": "llm"})["concurrency"]
    assert row["recommended"] == capacity.PROVIDER_CONSUMER_MAX_CONCURRENCY and row["bound"] == "no data"
