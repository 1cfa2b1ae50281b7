"""The learning engine: a user's refresh folds only their ratings and reports what changed; the schedule
folds everyone's through the same engine."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from chalicelib.db.models import Agent, TaskFeedback
from chalicelib.db.session import Database
from chalicelib.engines.learning import refresh
from tests.integration import engine_seed as es
from tests.integration.conftest import FakeContext


def test_the_report_lists_each_changed_agent_before_and_after(db: Database, settings: Any) -> None:
    uid, other = es.user(db), es.user(db)
    good = es.agent(db, uid, "validation", "good")
    poor = es.agent(db, uid, "security", "poor")
    untouched = es.agent(db, uid, "validation", "untouched")
    es.rate(db, uid, good, "validation", 5, 5, 4)
    es.rate(db, uid, poor, "security", 1)
    theirs = es.agent(db, other, "validation", "theirs")
    es.rate(db, other, theirs, "validation", 1, 1)

    out = es.run("learning", es.ctx(db, settings, uid))
    assert out["feedback_counted"] == 4 and out["agents_updated"] == 2 and out["complete"] is True
    rows = {r["agent_name"]: r for r in out["agents"]}
    assert set(rows) == {"good", "poor"}  # neither the untouched agent nor the other user's
    assert rows["good"]["ratings"] == [4, 5, 5] and rows["good"]["feedback_count"] == 3
    assert rows["good"]["before"]["mean"] == 0.5
    assert rows["good"]["after"]["alpha"] == 1 + 1 + 1 + 0.75 and rows["good"]["after"]["beta"] == 1 + 0.25
    assert rows["good"]["mean_change"] > 0 > rows["poor"]["mean_change"]
    assert rows["poor"]["after"] == {"mean": round(1 / 3, 6), "alpha": 1.0, "beta": 2.0, "evidence": 1.0}
    with db.read() as session:
        assert session.get(Agent, untouched).quality_updated_at is None  # type: ignore[union-attr]
        assert session.get(Agent, theirs).quality_alpha == 1.0  # type: ignore[union-attr]
        assert session.scalar(select(func.count()).select_from(TaskFeedback)
                              .where(TaskFeedback.processed_at.is_(None))) == 2  # the other user's wait

    # a second refresh has nothing left to count
    again = es.run("learning", es.ctx(db, settings, uid))
    assert again["feedback_counted"] == 0 and again["agents"] == []


def test_the_schedule_folds_everyone_through_the_engine(db: Database, settings: Any) -> None:
    from chalicelib.container import Container, set_container
    from functions import learning_sweep

    a, b = es.user(db), es.user(db)
    es.rate(db, a, es.agent(db, a), "validation", 5)
    es.rate(db, b, es.agent(db, b), "validation", 2)
    set_container(Container(settings, database=db))
    try:
        assert learning_sweep.handler({}, FakeContext()) == {"feedback_counted": 2, "agent_updates": 2}
    finally:
        set_container(None)


def test_batches_merge_into_one_line_per_agent(db: Database, settings: Any) -> None:
    from chalicelib.db.types import utcnow

    uid = es.user(db)
    aid = es.agent(db, uid, "validation", "busy")
    es.rate(db, uid, aid, "validation", 5, 5, 5)
    out = refresh(db.transaction, half_life_days=30, now=utcnow(), user_id=uid, max_batches=5, batch_size=2)
    assert out["batches"] == 2 and out["complete"] is True
    [row] = out["agents"]
    assert row["feedback_count"] == 3 and row["ratings"] == [5, 5, 5]
    assert row["before"]["alpha"] == 1.0 and row["after"]["alpha"] == 4.0


def test_a_bounded_refresh_says_it_is_not_complete(db: Database, settings: Any) -> None:
    from chalicelib.db.types import utcnow

    uid = es.user(db)
    es.rate(db, uid, es.agent(db, uid), "validation", 3, 3, 3)
    out = refresh(db.transaction, half_life_days=30, now=utcnow(), user_id=uid, max_batches=1, batch_size=2)
    assert out["feedback_counted"] == 2 and out["complete"] is False
