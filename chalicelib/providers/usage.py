"""Provider usage in Postgres: the accounting row of every model call and the per-user daily token budget.

Every model call of a user's agent — served by a provider or from the prompt cache, on an operator endpoint or
the user's own — writes one `provider_usage` row in its own short transaction (so tokens of a task that later
fails still count), written by the intelligence gateway (chalicelib.engines.intelligence). `tokens` is what the
call charged against the budget: operator endpoints only, never a cached answer. The check before a call is one
index-only range scan over (user_id, created_at) carrying `tokens`. Concurrent tasks of one user may overshoot
the budget by at most one call each: the check and the charge are not one transaction, on purpose — holding a
lock across a model call would serialize the user's tasks for minutes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from chalicelib.db.models import ProviderUsage

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.orm import Session

    from chalicelib.db.session import Database


def day_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def spent_on(session: Session, user_id: uuid.UUID, now: datetime) -> int:
    """Tokens charged to the user's budget on `now`'s UTC day: one index-only range scan."""
    start = day_start(now)
    total = session.scalar(select(func.coalesce(func.sum(ProviderUsage.tokens), 0)).where(
        ProviderUsage.user_id == user_id, ProviderUsage.created_at >= start,
        ProviderUsage.created_at < start + timedelta(days=1)))
    return int(total or 0)


@dataclass(frozen=True)
class CallRecord:
    """One model call as the ledger stores it."""

    user_id: uuid.UUID
    task_id: uuid.UUID | None
    endpoint: str
    model: str
    charged_tokens: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    latency_ms: float
    attempts: int
    cached: bool


class UsageLedger:
    def __init__(self, db: Database, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.db = db
        self._now = now

    def spent_today(self, user_id: uuid.UUID) -> int:
        with self.db.read() as session:
            return spent_on(session, user_id, self._now())

    def record(self, call: CallRecord) -> None:
        with self.db.transaction() as session:
            session.add(ProviderUsage(
                user_id=call.user_id, task_id=call.task_id, endpoint=call.endpoint, model=call.model[:200],
                tokens=call.charged_tokens, input_tokens=call.input_tokens, output_tokens=call.output_tokens,
                total_tokens=call.total_tokens, latency_ms=call.latency_ms, attempts=call.attempts,
                cached=call.cached, created_at=self._now()))


class DailyBudget:
    """One task's view of its user's budget (the `Budget` the gateway checks); the gateway's usage rows charge it."""

    def __init__(self, ledger: UsageLedger, limit: int, user_id: uuid.UUID) -> None:
        self.ledger = ledger
        self.limit = limit
        self.user_id = user_id

    def remaining(self) -> int:
        return self.limit - self.ledger.spent_today(self.user_id)
