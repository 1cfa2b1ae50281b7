"""Tasks with chosen statuses, times and failures, written straight to the database (the engines read them)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import insert

from chalicelib.config import Settings
from chalicelib.db.models import Task, User
from chalicelib.db.session import Database
from chalicelib.engines import EngineContext

#: the fixtures' clock: every task is created relative to it
T0 = datetime(2026, 11, 30, 10, 0, tzinfo=timezone.utc)


def task_row(user_id: uuid.UUID, agent_id: uuid.UUID, agent_type: str, status: str, *, created: timedelta,
             wait: float | None = None, run: float | None = None, error_code: str | None = None,
             attempts: int = 1) -> dict[str, Any]:
    """`wait` seconds from creation to start, `run` seconds from start to completion."""
    created_at = T0 + created
    started_at = None if wait is None else created_at + timedelta(seconds=wait)
    completed_at = None if started_at is None or run is None else started_at + timedelta(seconds=run)
    return {"id": uuid.uuid4(), "user_id": user_id, "agent_id": agent_id, "agent_type": agent_type,
            "title": "t", "status": status, "priority": "normal", "input_data": {}, "attempts": attempts,
            "error": None if error_code is None else {"code": error_code, "message": "m"},
            "created_at": created_at, "updated_at": created_at, "started_at": started_at,
            "completed_at": completed_at}


def add_tasks(db: Database, rows: list[dict[str, Any]]) -> None:
    with db.transaction() as s:
        # Multi-row statements: an executemany is a statement per row on psycopg, each firing the ledger's
        # trigger on the same user's counter row (bench/engine_analytics.py, `seed`).
        for i in range(0, len(rows), 1000):
            s.execute(insert(Task).values(rows[i:i + 1000]))


def make_admin(db: Database, user_id: uuid.UUID) -> None:
    with db.transaction() as s:
        s.get_one(User, user_id).role = "admin"


def context(db: Database, settings: Settings, user_id: uuid.UUID) -> EngineContext:
    return EngineContext(user_id=user_id, transaction=db.transaction, settings=settings)


class StatementCounter:
    """Counts SQL statements sent through an engine (SQLAlchemy's before_cursor_execute)."""

    def __init__(self, db: Database) -> None:
        self.engine = db.engine
        self.count = 0

    def _on(self, *args: Any) -> None:
        self.count += 1

    def __enter__(self) -> StatementCounter:
        from sqlalchemy import event

        event.listen(self.engine, "before_cursor_execute", self._on)
        return self

    def __exit__(self, *exc: object) -> None:
        from sqlalchemy import event

        event.remove(self.engine, "before_cursor_execute", self._on)
