"""What the analytics and performance engines share: who the caller is, the range they ask about, and the
SQL building blocks (percentiles, durations) both aggregate with.

The aggregates use Postgres functions (`percentile_cont ... WITHIN GROUP`, `date_trunc(..., 'UTC')`,
`GROUPING SETS`); the platform runs on Postgres only (`make run` refuses SQLite), so the engines do too.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import ColumnElement, extract, func, select
from sqlalchemy.orm import QueryableAttribute, Session

from chalicelib.db.models import User
from chalicelib.domain.rbac import Role
from chalicelib.engines.registry import EngineInputInvalidError

#: the default range when the input names none: the last week.
DEFAULT_RANGE = timedelta(days=7)

RANGE_PROPERTIES: dict[str, Any] = {
    "from": {"type": "string", "format": "date-time",
             "description": "Start of the range (inclusive, by task creation time); default `to` minus 7 days."},
    "to": {"type": "string", "format": "date-time", "description": "End of the range (exclusive); default now."},
}

#: percentiles as an object of seconds (null when nothing was measured)
PERCENTILES_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["count"],
    "properties": {"count": {"type": "integer"}},
    "additionalProperties": {"type": ["number", "null"]},
}


def is_admin(session: Session, user_id: uuid.UUID) -> bool:
    """The caller's role now (one statement): an admin's figures cover every user's tasks and runs."""
    role = session.scalar(select(User.role).where(User.id == user_id, User.is_active.is_(True)))
    return role == Role.ADMIN


def scoped(column: QueryableAttribute[Any], user_id: uuid.UUID, admin: bool) -> list[ColumnElement[bool]]:
    """The owner filter: every query passes through it (an admin's is empty)."""
    return owned(column, None if admin else user_id)


def owned(column: Any, owner: uuid.UUID | None) -> list[ColumnElement[bool]]:
    """`scoped` for callers that carry the owner as `None` for an admin's all-users scope."""
    return [] if owner is None else [column == owner]


def parse_time(data: dict[str, Any], key: str) -> datetime | None:
    raw = data.get(key)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError as exc:
        raise EngineInputInvalidError(f"`{key}` is not an ISO 8601 date-time", {"field": key}) from exc
    # a naive time means UTC, like every timestamp the API returns
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def time_range(data: dict[str, Any], now: datetime | None = None) -> tuple[datetime, datetime]:
    end = parse_time(data, "to") or (now or datetime.now(timezone.utc))
    start = parse_time(data, "from") or end - DEFAULT_RANGE
    if start >= end:
        raise EngineInputInvalidError("`from` must be before `to`", {"from": start.isoformat(), "to": end.isoformat()})
    return start, end


def seconds(later: QueryableAttribute[Any], earlier: QueryableAttribute[Any]) -> ColumnElement[Any]:
    return extract("epoch", later - earlier)


def percentiles(expr: ColumnElement[Any], fractions: dict[str, float], label: str,
                where: ColumnElement[bool] | None = None) -> list[ColumnElement[Any]]:
    """`percentile_cont` (interpolated, as numpy's default) per fraction, over the rows `where` admits;
    NULL durations are ignored."""
    out: list[ColumnElement[Any]] = []
    for name, f in fractions.items():
        agg = func.percentile_cont(f).within_group(expr)
        out.append((agg if where is None else agg.filter(where)).label(f"{label}_{name}"))
    return out


def percentile_values(row: Any, fractions: dict[str, float], label: str, count: int) -> dict[str, Any]:
    out: dict[str, Any] = {"count": int(count or 0)}
    for name in fractions:
        value = getattr(row, f"{label}_{name}")
        out[name] = None if value is None else round(float(value), 3)
    return out


def iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
