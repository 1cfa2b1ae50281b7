"""The per-user daily token budget on operator endpoints, counted in Postgres.

Every model call on an operator endpoint writes one `provider_usage` row in its own short
transaction (so tokens of a task that later fails still count); the check before a call is one
index-only range scan over (user_id, created_at). Concurrent tasks of one user may overshoot the
budget by at most one call each: the check and the charge are not one transaction, on purpose —
holding a lock across a model call would serialize the user's tasks for minutes.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from chalicelib.db.models import ProviderUsage

if TYPE_CHECKING:
    from collections.abc import Callable

    from chalicelib.db.session import Database


def day_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


class UsageLedger:
    def __init__(self, db: Database, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.db = db
        self._now = now

    def spent_today(self, user_id: uuid.UUID) -> int:
        start = day_start(self._now())
        with self.db.read() as session:
            total = session.scalar(select(func.coalesce(func.sum(ProviderUsage.tokens), 0)).where(
                ProviderUsage.user_id == user_id, ProviderUsage.created_at >= start,
                ProviderUsage.created_at < start + timedelta(days=1)))
        return int(total or 0)

    def record(self, user_id: uuid.UUID, task_id: uuid.UUID | None, endpoint: str, tokens: int) -> None:
        with self.db.transaction() as session:
            session.add(ProviderUsage(user_id=user_id, task_id=task_id, endpoint=endpoint, tokens=tokens,
                                      created_at=self._now()))


class DailyBudget:
    """One task's view of its user's budget (the `Budget` an LLMSession checks)."""

    def __init__(self, ledger: UsageLedger, limit: int, user_id: uuid.UUID, task_id: uuid.UUID | None,
                 endpoint: str) -> None:
        self.ledger = ledger
        self.limit = limit
        self.user_id = user_id
        self.task_id = task_id
        self.endpoint = endpoint

    def remaining(self) -> int:
        return self.limit - self.ledger.spent_today(self.user_id)

    def charge(self, tokens: int) -> None:
        if tokens > 0:
            self.ledger.record(self.user_id, self.task_id, self.endpoint, tokens)
