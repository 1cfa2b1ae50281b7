"""Per-user quotas: agents per user, tasks per user per UTC day, size of an agent's metadata/config.

Each check is one indexed statement in the caller's transaction:
- agents: the user's row is locked (FOR UPDATE) before counting their live agents, so concurrent
  creates cannot both take the last slot; creating agents is rare, nothing else waits on that lock.
- tasks: a COUNT over `ix_tasks_user_id_created_at_id` (user_id, created_at >= today 00:00 UTC). Not
  locked: POST /tasks must not serialize a user's requests, so concurrent creates may pass the limit
  by at most the number in flight. Every task of the user counts, subtasks included; the check runs at
  POST /tasks (an orchestrator's steps are bounded by its own limits).
- JSON size: canonical JSON (sorted keys, no spaces, UTF-8) so the limit does not depend on how the
  client formatted the body.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import BindParameter, bindparam, func, select
from sqlalchemy.orm import Session

from chalicelib.config import Settings
from chalicelib.db.models import Agent, Task, User
from chalicelib.errors import DailyQuotaExceededError, FieldTooLargeError, QuotaExceededError


def canonical_size(value: Any) -> int:
    return len(json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode())


@dataclass(frozen=True)
class Quotas:
    agents_per_user: int = 100
    tasks_per_user_per_day: int = 5000
    agent_json_bytes: int = 64 * 1024

    @classmethod
    def from_settings(cls, s: Settings) -> Quotas:
        return cls(s.quota_agents_per_user, s.quota_tasks_per_user_per_day, s.quota_agent_json_bytes)

    def check_agent_json(self, fields: dict[str, Any]) -> None:
        """`fields`: {"metadata": ..., "config": ...} (those present). Raises FieldTooLargeError (422)."""
        for name, value in fields.items():
            size = canonical_size(value)
            if size > self.agent_json_bytes:
                raise FieldTooLargeError(f"{name} is {size} bytes as JSON; the limit is {self.agent_json_bytes}",
                                         {"field": name, "bytes": size, "limit_bytes": self.agent_json_bytes})

    def reserve_agent(self, session: Session, user_id: uuid.UUID) -> None:
        """Before inserting an agent: lock the owner, count their live agents. Raises QuotaExceededError (409)."""
        session.execute(select(User.id).where(User.id == user_id).with_for_update())
        live = session.scalar(select(func.count()).select_from(Agent)
                              .where(Agent.user_id == user_id, Agent.deleted_at.is_(None))) or 0
        if live >= self.agents_per_user:
            raise QuotaExceededError(f"you have {live} agents; the limit is {self.agents_per_user}",
                                     {"quota": "agents_per_user", "limit": self.agents_per_user, "used": live})

    def check_tasks_today(self, session: Session, user_id: uuid.UUID, now: datetime) -> None:
        """Raises DailyQuotaExceededError (429, Retry-After: until 00:00 UTC) when today's tasks are spent."""
        used = session.connection().execute(_TASKS_SINCE, {"user_id": user_id, "since": day_of(now)}).scalar() or 0
        self.check_tasks_used(int(used), now)

    def check_tasks_used(self, used: int, now: datetime) -> None:
        """`check_tasks_today` with the count already read (`tasks_since(user, day_of(now))`, e.g. in the same
        statement as the new task's lane: chalicelib/services/lanes.py)."""
        day = day_of(now)
        if used >= self.tasks_per_user_per_day:
            retry = max(1, math.ceil((day + timedelta(days=1) - now).total_seconds()))
            raise DailyQuotaExceededError(
                f"you created {used} tasks today (UTC); the limit is {self.tasks_per_user_per_day}", retry,
                {"quota": "tasks_per_user_per_day", "limit": self.tasks_per_user_per_day, "used": used,
                 "retry_after_seconds": retry})


def day_of(now: datetime) -> datetime:
    """00:00 UTC of `now`'s day: where the daily task quota starts counting."""
    return now.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


def tasks_since(user_id: uuid.UUID | BindParameter[Any], since: datetime | BindParameter[Any]) -> Any:
    """The count statement (ix_tasks_user_id_created_at_id answers it)."""
    return select(func.count()).select_from(Task).where(Task.user_id == user_id, Task.created_at >= since)


#: `tasks_since` built once, its values bound per call (POST /tasks runs it every time; building it each time
#: cost more CPU than executing it).
_TASKS_SINCE = tasks_since(bindparam("user_id", type_=Task.__table__.c.user_id.type),
                           bindparam("since", type_=Task.__table__.c.created_at.type))
