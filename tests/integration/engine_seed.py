"""Seeding for the optimization, recommendation, intelligence and learning engine tests: users, agents,
tasks and ratings written straight to Postgres, and a real EngineContext over the test database."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from jsonschema import Draft202012Validator

from chalicelib.config import Settings
from chalicelib.db.models import Agent, Task, TaskFeedback, User
from chalicelib.db.session import Database
from chalicelib.db.types import utcnow
from chalicelib.engines import EngineContext, registry


def user(db: Database, name: str | None = None) -> uuid.UUID:
    name = name or f"u{uuid.uuid4().hex[:8]}"
    with db.transaction() as session:
        row = User(username=name, email=f"{name}@example.com", password_hash="x")
        session.add(row)
        session.flush()
        return row.id


def agent(db: Database, user_id: uuid.UUID, agent_type: str = "validation", name: str = "a",
          **values: Any) -> uuid.UUID:
    with db.transaction() as session:
        row = Agent(user_id=user_id, type=agent_type, name=name, **values)
        session.add(row)
        session.flush()
        return row.id


def tasks(db: Database, user_id: uuid.UUID, agent_id: uuid.UUID, agent_type: str, n: int, status: str = "completed",
          duration_seconds: float | None = None, created_ago: timedelta = timedelta(hours=1)) -> list[uuid.UUID]:
    now = utcnow()
    ids = []
    with db.transaction() as session:
        for _ in range(n):
            created = now - created_ago
            started = completed = None
            if duration_seconds is not None:
                started = created + timedelta(seconds=1)
                completed = started + timedelta(seconds=duration_seconds)
            row = Task(user_id=user_id, agent_id=agent_id, agent_type=agent_type, title="t", status=status,
                       created_at=created, started_at=started, completed_at=completed)
            session.add(row)
            session.flush()
            ids.append(row.id)
    return ids


def rate(db: Database, user_id: uuid.UUID, agent_id: uuid.UUID, agent_type: str, *ratings: int) -> None:
    for rating in ratings:
        [task_id] = tasks(db, user_id, agent_id, agent_type, 1)
        with db.transaction() as session:
            session.add(TaskFeedback(task_id=task_id, agent_id=agent_id, user_id=user_id, rating=rating))


def ctx(db: Database, settings: Settings, user_id: uuid.UUID, **extras: Any) -> EngineContext:
    return EngineContext(user_id=user_id, transaction=db.transaction, settings=settings, extras=extras)


def run(name: str, context: EngineContext, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """The engine's answer to `data` (its example by default), checked against both of its schemas."""
    engine = registry.get(name)
    checked = registry.validate_input(engine, engine.example if data is None else data)
    out = engine.run(context, checked)
    errors = list(Draft202012Validator(engine.output_schema).iter_errors(out))
    assert not errors, [e.message for e in errors]
    return out


def stamp(db: Database, agent_id: uuid.UUID, alpha: float, beta: float, at: datetime | None = None) -> None:
    with db.transaction() as session:
        row = session.get(Agent, agent_id)
        assert row is not None
        row.quality_alpha, row.quality_beta, row.quality_updated_at = alpha, beta, at
