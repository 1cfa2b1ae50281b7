"""The analytics engine: figures checked against a hand-counted fixture, a constant number of SQL statements,
and owner scoping (user B never sees user A's figures; an admin sees everyone's, marked `scope: all`)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from chalicelib.config import Settings
from chalicelib.db.session import Database
from chalicelib.engines import registry
from chalicelib.engines.registry import EngineInputInvalidError
from tests.integration.engine_support import StatementCounter, add_tasks, context, make_admin, task_row
from tests.integration.workflow_support import make_agent, make_user

RANGE = {"from": "2026-11-30T00:00:00Z", "to": "2026-12-02T00:00:00Z", "bucket": "day"}
H, D = timedelta(hours=1), timedelta(days=1)


def _fixture(db: Database) -> tuple:
    """Nine tasks in the range plus one before it. Hand-counted figures are asserted below."""
    user = make_user(db)
    val, sec = make_agent(db, user, "validation"), make_agent(db, user, "security")
    add_tasks(db, [
        # completed: run times 10, 20, 30, 40 s; end to end 12, 24, 31, 40 s
        task_row(user, val, "validation", "completed", created=timedelta(0), wait=2, run=10),
        task_row(user, val, "validation", "completed", created=H, wait=4, run=20),
        task_row(user, val, "validation", "completed", created=H, wait=1, run=30),
        task_row(user, val, "validation", "completed", created=D, wait=0, run=40),
        task_row(user, sec, "security", "failed", created=timedelta(0), wait=1, error_code="TIME_LIMIT_EXCEEDED"),
        task_row(user, sec, "security", "failed", created=H, wait=1, error_code="AGENT_INPUT_INVALID"),
        task_row(user, sec, "security", "timed_out", created=2 * H, wait=1, error_code="TASK_TIMED_OUT"),
        task_row(user, sec, "security", "failed", created=3 * H, wait=1),  # no error recorded: UNKNOWN
        task_row(user, sec, "security", "pending", created=4 * H),
        task_row(user, val, "validation", "completed", created=-D, wait=1, run=99),  # before the range
    ])
    return user, val, sec


def test_figures_match_the_hand_counted_fixture(db: Database, settings: Settings) -> None:
    user, val, sec = _fixture(db)
    out = registry.get("analytics").run(context(db, settings, user), dict(RANGE))
    assert out["scope"] == "own"
    assert out["range"] == {"from": "2026-11-30T00:00:00Z", "to": "2026-12-02T00:00:00Z", "bucket": "day"}
    t = out["tasks"]
    assert t["total"] == 9
    assert t["by_status"] == {"completed": 4, "failed": 3, "timed_out": 1, "pending": 1}
    assert t["by_agent_type"] == {"validation": 4, "security": 5}
    assert t["by_agent"] == {str(sec): 5, str(val): 4}
    # percentile_cont interpolates: [10, 20, 30, 40] -> p50 25, p90 30 + 0.7 * 10, p99 30 + 0.97 * 10
    assert t["latency_seconds"]["run"] == {"count": 4, "p50": 25.0, "p90": 37.0, "p99": 39.7}
    # [12, 24, 31, 40] -> p50 27.5, p90 31 + 0.7 * 9, p99 31 + 0.97 * 9
    assert t["latency_seconds"]["end_to_end"] == {"count": 4, "p50": 27.5, "p90": 37.3, "p99": 39.73}
    assert t["failures"] == {"total": 4, "by_code": {"TIME_LIMIT_EXCEEDED": 1, "AGENT_INPUT_INVALID": 1,
                                                     "TASK_TIMED_OUT": 1, "UNKNOWN": 1}}
    assert out["series"] == [
        {"start": "2026-11-30T00:00:00Z", "tasks": 8, "completed": 3, "failed": 4, "runs": 0},
        {"start": "2026-12-01T00:00:00Z", "tasks": 1, "completed": 1, "failed": 0, "runs": 0}]
    assert out["runs"] == {"total": 0, "by_status": {},
                           "duration_seconds": {"count": 0, "p50": None, "p90": None, "p99": None}}


def test_hourly_series_has_every_bucket_including_empty_ones(db: Database, settings: Settings) -> None:
    user, _, _ = _fixture(db)
    out = registry.get("analytics").run(context(db, settings, user), {
        "from": "2026-11-30T09:30:00Z", "to": "2026-11-30T15:00:00Z", "bucket": "hour"})
    assert [(p["start"][11:16], p["tasks"]) for p in out["series"]] == [
        ("09:00", 0), ("10:00", 2), ("11:00", 3), ("12:00", 1), ("13:00", 1), ("14:00", 1)]


def test_too_many_buckets_are_refused_clearly(db: Database, settings: Settings) -> None:
    user = make_user(db)
    with pytest.raises(EngineInputInvalidError) as caught:
        registry.get("analytics").run(context(db, settings, user), {
            "from": "2026-01-01T00:00:00Z", "to": "2026-12-01T00:00:00Z", "bucket": "hour"})
    assert caught.value.details == {"buckets": 8016, "max_buckets": 2000, "bucket": "hour"}


@pytest.mark.parametrize("engine_name", ["analytics", "performance"])
def test_the_statement_count_does_not_grow_with_the_number_of_tasks(db: Database, settings: Settings,
                                                                     engine_name: str) -> None:
    counts = []
    for n in (10, 500):
        user = make_user(db)
        agents = [make_agent(db, user, t) for t in ("validation", "security", "metrics")]
        add_tasks(db, [task_row(user, agents[i % 3], ("validation", "security", "metrics")[i % 3],
                                ("completed", "failed", "pending")[i % 3], created=i * timedelta(minutes=7),
                                wait=1, run=i % 17, error_code=f"E{i % 5}", attempts=1 + i % 2) for i in range(n)])
        with StatementCounter(db) as counter:
            out = registry.get(engine_name).run(context(db, settings, user), {"from": "2026-11-29T00:00:00Z",
                                                                               "to": "2026-12-30T00:00:00Z"})
        counts.append(counter.count)
        if engine_name == "analytics":
            assert out["tasks"]["total"] == n
        else:
            assert sum(a["tasks"] for a in out["agent_types"]) == n
    assert counts[0] == counts[1], counts
    assert counts[0] == {"analytics": 7, "performance": 3}[engine_name]  # as each module's docstring lists


def test_user_b_never_sees_user_a_and_an_admin_sees_everyone_marked(db: Database, settings: Settings) -> None:
    a, _, _ = _fixture(db)
    b = make_user(db)
    b_agent = make_agent(db, b)
    add_tasks(db, [task_row(b, b_agent, "validation", "completed", created=timedelta(0), wait=1, run=5)])
    analytics = registry.get("analytics")
    mine = analytics.run(context(db, settings, b), dict(RANGE))
    assert mine["scope"] == "own" and mine["tasks"]["total"] == 1
    assert mine["tasks"]["by_agent"] == {str(b_agent): 1}
    assert mine["tasks"]["failures"]["total"] == 0
    perf = registry.get("performance").run(context(db, settings, b), {"from": RANGE["from"], "to": RANGE["to"]})
    assert [(x["agent_type"], x["tasks"]) for x in perf["agent_types"]] == [("validation", 1)]
    assert analytics.run(context(db, settings, a), dict(RANGE))["tasks"]["total"] == 9

    admin = make_user(db)
    make_admin(db, admin)
    everyone = analytics.run(context(db, settings, admin), dict(RANGE))
    assert everyone["scope"] == "all" and everyone["tasks"]["total"] == 10
    assert registry.get("performance").run(context(db, settings, admin), {
        "from": RANGE["from"], "to": RANGE["to"]})["scope"] == "all"
