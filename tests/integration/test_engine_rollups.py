"""Analytics rollups: after compaction the engine answers the same counts, series, failures and agents as
from the tasks themselves, percentiles within the histogram's bound; an open task holds its hour back; the
compactor is idempotent and per user; the statement count stays constant."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from chalicelib.config import Settings
from chalicelib.db.rollup_models import TaskLatencyHistogram, TaskRollup, TaskRollupMark
from chalicelib.db.session import Database
from chalicelib.engines import histogram, registry, rollups
from tests.integration.engine_support import T0, StatementCounter, add_tasks, context, make_admin, task_row
from tests.integration.workflow_support import make_agent, make_user

NOW = T0 + timedelta(days=5)  # every fixture hour has closed
GRACE = timedelta(minutes=10)
TYPES = ("validation", "security", "metrics")
STATUSES = ("completed", "completed", "failed", "timed_out", "cancelled")


def _compact(db: Database, now: datetime = NOW) -> rollups.CompactionReport:
    return rollups.compact(db, now=now, grace=GRACE, max_hours=24 * 60, max_users=1000)


def _spread(db: Database, user: uuid.UUID, n: int, seed: int = 7) -> None:
    """n terminal tasks over the 4 days after T0 - 1 day, with varied types, statuses, codes and durations."""
    rng = random.Random(seed)
    agents = [(make_agent(db, user, t), t) for t in TYPES]
    rows = []
    for _ in range(n):
        agent, agent_type = rng.choice(agents)
        status = rng.choice(STATUSES)
        rows.append(task_row(user, agent, agent_type, status, created=timedelta(minutes=rng.randrange(-1440, 4320)),
                             wait=rng.uniform(0, 5), run=rng.uniform(0.01, 120),
                             error_code=None if status == "completed" else rng.choice(("E1", "E2", None))))
    add_tasks(db, rows)


def _strip(out: dict) -> dict:
    t = dict(out["tasks"])
    t.pop("latency_seconds")
    return {"tasks": t, "series": out["series"], "runs": out["runs"]}


@pytest.mark.parametrize("query", [
    {"from": "2026-11-29T00:00:00Z", "to": "2026-12-04T00:00:00Z", "bucket": "day"},
    {"from": "2026-11-29T07:23:00Z", "to": "2026-12-03T16:41:10Z", "bucket": "day"},
    {"from": "2026-11-30T05:10:00Z", "to": "2026-12-01T19:00:00Z", "bucket": "hour"},
])
def test_rollups_answer_what_the_tasks_do(db: Database, settings: Settings, query: dict) -> None:
    user = make_user(db)
    _spread(db, user, 3000)
    engine = registry.get("analytics")
    raw = engine.run(context(db, settings, user), dict(query))
    assert raw["tasks"]["latency_seconds"]["method"] == "exact"
    report = _compact(db)
    assert report.users == 1 and report.hours > 24
    rolled = engine.run(context(db, settings, user), dict(query))
    assert rolled["tasks"]["latency_seconds"]["method"] == "histogram"
    assert _strip(rolled) == _strip(raw)
    assert raw["tasks"]["total"] > 1000
    for metric in ("run", "end_to_end"):
        exact, estimate = raw["tasks"]["latency_seconds"][metric], rolled["tasks"]["latency_seconds"][metric]
        assert exact["count"] == estimate["count"]
        for p in ("p50", "p90", "p99"):
            # the bucket bound, plus the interpolation between neighbouring ranks on sparse data
            assert estimate[p] == pytest.approx(exact[p], rel=histogram.RELATIVE_ERROR + 0.01), (metric, p)


def test_an_open_task_holds_its_hour_back_until_it_ends(db: Database, settings: Settings) -> None:
    user = make_user(db)
    agent = make_agent(db, user)
    add_tasks(db, [task_row(user, agent, "validation", "completed", created=timedelta(hours=h), wait=1, run=2)
                   for h in range(10)])
    open_row = task_row(user, agent, "validation", "processing", created=timedelta(hours=4, minutes=30), wait=1)
    add_tasks(db, [open_row])
    _compact(db)
    with db.transaction() as s:
        assert s.get_one(TaskRollupMark, user).compacted_until == T0 + timedelta(hours=4)
    query = {"from": "2026-11-30T00:00:00Z", "to": "2026-12-01T00:00:00Z", "bucket": "hour"}
    out = registry.get("analytics").run(context(db, settings, user), dict(query))
    assert out["tasks"]["total"] == 11 and out["tasks"]["by_status"] == {"completed": 10, "processing": 1}

    from sqlalchemy import update

    from chalicelib.db.models import Task
    with db.transaction() as s:
        s.execute(update(Task).where(Task.id == open_row["id"]).values(status="completed",
                                                                        completed_at=T0 + timedelta(hours=5)))
    _compact(db)
    with db.transaction() as s:
        assert s.get_one(TaskRollupMark, user).compacted_until == rollups.floor_hour(NOW - GRACE)
    again = registry.get("analytics").run(context(db, settings, user), dict(query))
    assert again["tasks"]["by_status"] == {"completed": 11}
    assert sum(p["tasks"] for p in again["series"]) == 11


def test_compaction_is_idempotent_and_counts_each_task_once(db: Database, settings: Settings) -> None:
    user = make_user(db)
    _spread(db, user, 500)
    _compact(db)
    second = _compact(db)
    assert second.users == 0 and second.hours == 0
    with db.transaction() as s:
        hour_total = s.scalar(select(func.sum(TaskRollup.n)).where(TaskRollup.grain == "hour"))
        day_total = s.scalar(select(func.sum(TaskRollup.n)).where(TaskRollup.grain == "day"))
        completed = s.scalar(select(func.sum(TaskLatencyHistogram.n)).where(
            TaskLatencyHistogram.grain == "hour", TaskLatencyHistogram.metric == "run"))
    assert hour_total == 500
    # day rows: every day compacted whole (the mark stops mid-day, so the last day is in hour rows only)
    assert 0 < day_total <= 500
    assert completed is not None and completed > 100


def test_compaction_in_steps_builds_the_same_day_rows(db: Database, settings: Settings) -> None:
    """Marks that stop mid-day: the day row is built once the day is whole, from every hour row of it."""
    user = make_user(db)
    _spread(db, user, 800)
    query = {"from": "2026-11-29T00:00:00Z", "to": "2026-12-04T00:00:00Z", "bucket": "day"}
    raw = registry.get("analytics").run(context(db, settings, user), dict(query))
    for hours in range(7, 24 * 5, 13):
        _compact(db, now=T0 - timedelta(days=1) + timedelta(hours=hours) + GRACE)
    _compact(db)
    assert _strip(registry.get("analytics").run(context(db, settings, user), dict(query))) == _strip(raw)


def test_scopes_and_the_statement_count_with_rollups(db: Database, settings: Settings) -> None:
    a, b, admin = make_user(db), make_user(db), make_user(db)
    make_admin(db, admin)
    _spread(db, a, 400, seed=1)
    _spread(db, b, 30, seed=2)
    _compact(db)
    query = {"from": "2026-11-29T00:00:00Z", "to": "2026-12-04T00:00:00Z", "bucket": "day"}
    engine = registry.get("analytics")
    with StatementCounter(db) as counter:
        mine = engine.run(context(db, settings, b), dict(query))
    assert counter.count == 7
    assert mine["scope"] == "own" and mine["tasks"]["total"] == 30
    everyone = engine.run(context(db, settings, admin), dict(query))
    assert everyone["scope"] == "all" and everyone["tasks"]["total"] == 430
    assert everyone["tasks"]["latency_seconds"]["method"] == "histogram"


def test_a_user_without_a_mark_is_read_raw_even_when_others_are_compacted(db: Database, settings: Settings) -> None:
    """An admin's figures use the smallest mark: a user whose tasks arrived after the last run is not lost."""
    a, admin = make_user(db), make_user(db)
    make_admin(db, admin)
    _spread(db, a, 200)
    _compact(db)
    late = make_user(db)
    agent = make_agent(db, late)
    add_tasks(db, [task_row(late, agent, "validation", "completed", created=timedelta(hours=1), wait=1, run=1)])
    with db.transaction() as s:  # as if the compactor's first statement had run, and nothing since
        s.add(TaskRollupMark(user_id=late, compacted_until=T0, updated_at=datetime.now(timezone.utc)))
    query = {"from": "2026-11-29T00:00:00Z", "to": "2026-12-04T00:00:00Z", "bucket": "day"}
    assert registry.get("analytics").run(context(db, settings, admin), dict(query))["tasks"]["total"] == 201


def test_the_scheduled_function_compacts(db: Database, settings: Settings) -> None:
    from chalicelib.container import Container, set_container
    from functions import analytics_compactor
    from tests.integration.conftest import FakeContext

    user = make_user(db)
    _spread(db, user, 50)
    set_container(Container(settings, database=db))
    try:
        out = analytics_compactor.handler({}, FakeContext())
    finally:
        set_container(None)
    assert out["users"] == 1 and out["hours"] > 0 and out["blocked"] == 0
    from chalicelib.db.models import Task
    with db.transaction() as s:  # up to the real clock's closed hours (the fixture also has tasks after it)
        mark = s.get_one(TaskRollupMark, user).compacted_until
        before = s.scalar(select(func.count()).where(Task.created_at < mark))
        assert s.scalar(select(func.sum(TaskRollup.n)).where(TaskRollup.grain == "hour")) == before > 0
