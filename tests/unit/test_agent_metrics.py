"""Task statistics (SQLite path: percentiles interpolated in Python) and the EMF documents.

The same seed and the same expected numbers run on Postgres (percentile_cont in SQL) in
tests/integration/test_metrics_agent.py: both paths must agree to the millisecond.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from chalicelib.agents import registry
from chalicelib.agents.base import AgentContext
from chalicelib.agents.metrics import emf_documents
from chalicelib.db.models import Agent, Base, Task, User
from chalicelib.db.session import Database, make_engine
from chalicelib.errors import ValidationError
from chalicelib.services.emf import UNITS, Metric, document
from chalicelib.services.task_stats import TaskStats, percentile_cont

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

#: what seed() must produce over a 60-minute window ending at NOW, for its first user.
OVERALL = {
    "counts_by_status": {"pending": 1, "queued": 0, "processing": 0, "completed": 5, "failed": 1, "cancelled": 1,
                         "timed_out": 1},
    "finished": {"completed": 5, "failed": 1, "cancelled": 1, "timed_out": 1},
    "completed": 5,
    "throughput_per_minute": round(5 / 60, 6),
    "error_rate": round(2 / 7, 6),
    "latency_ms": {"end_to_end": {"p50": 3000.0, "p90": 7600.0, "p99": 9760.0},
                   "processing": {"p50": 2900.0, "p90": 7260.0, "p99": 9276.0}},
}
BY_TYPE = {
    "examination": {"completed": 1, "error_rate": 0.5,
                    "latency_ms": {"end_to_end": {"p50": 10000.0, "p90": 10000.0, "p99": 10000.0},
                                   "processing": {"p50": 9500.0, "p90": 9500.0, "p99": 9500.0}}},
    "validation": {"completed": 4, "error_rate": 0.2,
                   "latency_ms": {"end_to_end": {"p50": 2500.0, "p90": 3700.0, "p99": 3970.0},
                                  "processing": {"p50": 2400.0, "p90": 3600.0, "p99": 3870.0}}},
}


def _task(user: User, agent: Agent, status: str, created: datetime, *, started_ms: float | None = None,
          done_ms: float | None = None) -> Task:
    return Task(user_id=user.id, agent_id=agent.id, agent_type=agent.type, title="t", status=status,
                input_data={}, created_at=created, updated_at=created,
                started_at=created + timedelta(milliseconds=started_ms) if started_ms is not None else None,
                completed_at=created + timedelta(milliseconds=done_ms) if done_ms is not None else None)


def seed(session: Session, now: datetime, me: User | None = None) -> tuple[User, Agent, Agent]:
    """Two users (`me`, or a new one, and another); mine get a validation and an examination agent
    with a known mix of tasks."""
    users = [User(username=f"u{uuid.uuid4().hex[:8]}", email=f"{uuid.uuid4().hex[:8]}@example.com",
                  password_hash="x") for _ in range(1 if me else 2)]
    session.add_all(users)
    session.flush()
    me, other = (me, users[0]) if me else (users[0], users[1])
    val = Agent(user_id=me.id, name="val", type="validation")
    exa = Agent(user_id=me.id, name="exa", type="examination")
    theirs = Agent(user_id=other.id, name="theirs", type="validation")
    session.add_all([val, exa, theirs])
    session.flush()
    early = now - timedelta(minutes=50)
    rows = [_task(me, val, "completed", early + timedelta(seconds=i), started_ms=100, done_ms=ms)
            for i, ms in enumerate((1000, 2000, 3000, 4000))]
    rows += [
        _task(me, exa, "completed", early, started_ms=500, done_ms=10_000),
        _task(me, val, "failed", now - timedelta(minutes=40), started_ms=10, done_ms=50),
        _task(me, exa, "timed_out", now - timedelta(minutes=30), started_ms=10, done_ms=60_000),
        _task(me, val, "cancelled", now - timedelta(minutes=20), done_ms=5),
        _task(me, val, "pending", now - timedelta(minutes=10)),
        # outside the window: created and completed two hours ago
        _task(me, val, "completed", now - timedelta(hours=2), started_ms=1, done_ms=999_999),
        # another user's: never counted in my scope
        _task(other, theirs, "completed", early, started_ms=1, done_ms=1),
    ]
    session.add_all(rows)
    session.flush()
    return me, val, exa


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    engine = make_engine(f"sqlite:///{tmp_path / 'stats.db'}")
    Base.metadata.create_all(engine)
    yield Database(engine)
    engine.dispose()


def test_percentile_cont_interpolates_like_postgres() -> None:
    values = [10.0, 1.0, 4.0, 2.0]  # sorted: 1 2 4 10
    assert percentile_cont(values, 0.5) == 3.0
    assert percentile_cont(values, 0.9) == pytest.approx(8.2)  # 4 + 0.7 * 6
    assert percentile_cont([7.0], 0.99) == 7.0
    assert percentile_cont([], 0.5) is None


def test_stats_on_sqlite_match_the_definitions(sqlite_db: Database) -> None:
    with sqlite_db.transaction() as session:
        me, val, exa = seed(session, NOW)
        stats = TaskStats(session, now=NOW, window_minutes=60, user_id=me.id).compute(["agent_type", "agent_id"])
    assert stats["overall"] == OVERALL
    by_type = {g["agent_type"]: g for g in stats["groups"]["agent_type"]}
    for agent_type, expected in BY_TYPE.items():
        for key, value in expected.items():
            assert by_type[agent_type][key] == value, (agent_type, key)
    by_agent = {g["agent_id"]: g for g in stats["groups"]["agent_id"]}
    assert set(by_agent) == {str(val.id), str(exa.id)}
    assert by_agent[str(val.id)]["agent_type"] == "validation"
    assert by_agent[str(val.id)]["counts_by_status"]["pending"] == 1


def test_an_empty_window_reports_zeros_and_no_percentiles(sqlite_db: Database) -> None:
    with sqlite_db.transaction() as session:
        me, _, _ = seed(session, NOW)
        stats = TaskStats(session, now=NOW + timedelta(days=30), window_minutes=5, user_id=me.id).compute([])
    overall = stats["overall"]
    assert overall["completed"] == 0 and overall["error_rate"] is None and stats["groups"] == {}
    assert overall["latency_ms"]["end_to_end"] == {"p50": None, "p90": None, "p99": None}


def _assert_valid_emf(doc: dict[str, Any]) -> None:
    """The EMF specification's structural rules."""
    aws = doc["_aws"]
    assert isinstance(aws["Timestamp"], int) and aws["Timestamp"] > 0
    for directive in aws["CloudWatchMetrics"]:
        assert isinstance(directive["Namespace"], str) and directive["Namespace"]
        for dimension_set in directive["Dimensions"]:
            assert 0 < len(dimension_set) <= 30
            for name in dimension_set:
                assert isinstance(doc[name], str), name  # every dimension is a string member
        assert 0 < len(directive["Metrics"]) <= 100
        for metric in directive["Metrics"]:
            assert metric["Unit"] in UNITS
            assert isinstance(doc[metric["Name"]], (int, float)), metric["Name"]


def test_emf_documents_for_the_overall_and_each_type(sqlite_db: Database) -> None:
    with sqlite_db.transaction() as session:
        me, _, _ = seed(session, NOW)
        stats = TaskStats(session, now=NOW, window_minutes=60, user_id=me.id).compute(["agent_type"])
    ctx = AgentContext(task_id=uuid.uuid4(), agent_id=uuid.uuid4(), user_id=me.id, agent_type="metrics", now=NOW)
    docs = emf_documents(stats, scope_label=str(me.id), ctx=ctx)
    for doc in docs:
        _assert_valid_emf(json.loads(json.dumps(doc)))
    overall, examination, validation = docs
    assert overall["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service", "scope"]]
    assert overall["_aws"]["Timestamp"] == int(NOW.timestamp() * 1000)
    assert (overall["TasksCompleted"], overall["TasksFailed"], overall["LatencyP90"]) == (5, 2, 7600.0)
    assert overall["ErrorRate"] == pytest.approx(28.5714, abs=1e-4)
    assert examination["agent_type"] == "examination" and examination["ProcessingTimeP50"] == 9500.0
    assert validation["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service", "scope", "agent_type"]]


def test_emf_refuses_what_cloudwatch_would_drop() -> None:
    with pytest.raises(ValueError, match="unit"):
        document("YMERA", {"service": "ymera"}, [Metric("X", "Furlongs", 1)], NOW)
    with pytest.raises(ValueError, match="1..100"):
        document("YMERA", {"service": "ymera"}, [], NOW)
    with pytest.raises(ValueError, match="clashes"):
        document("YMERA", {"service": "ymera"}, [Metric("service", "Count", 1)], NOW)


@pytest.mark.parametrize("bad", [{"window_minutes": 0}, {"group_by": ["user_id"]}, {"scope": "everyone"},
                                 {"window_minutes": 60, "extra": True}])
def test_metrics_input_is_checked(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        registry.validate_input("metrics", bad)
