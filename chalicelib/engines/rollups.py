"""Analytics rollups: compaction of closed hours, and the plan that tells a query which parts of its range
to read from rollups and which from `tasks` (docs/engines.md, "Rollups").

Why compaction and not a trigger: a terminal task never changes status again, so an hour whose tasks are all
terminal can be summarised once and never touched. The compactor (functions/analytics_compactor.py, every
10 minutes) moves each user's mark (`task_rollup_marks.compacted_until`) forward over closed hours, up to the
oldest task of theirs that is still open, and at least `grace` behind now (so a transaction that set
`created_at` before the hour closed has committed). Hour rows are written for every compacted hour, day rows
for every day that is then compacted whole. Nothing on the task write path changes: the cost is one
`INSERT ... SELECT ... GROUP BY` per user and run, over that user's newly closed hours only, in a transaction
of that user's alone.

A query over [from, to) then reads rollups for the whole hours in [ceil_hour(from), min(floor_hour(to),
mark)) — day rows for the whole days among them when the series is per day — and `tasks` for the rest: at most
an hour at the start, and from the mark to `to`. An admin's all-users figures use the smallest mark of all
users (every user with tasks has one: the compactor creates missing marks first, in a statement of its own).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from chalicelib.db.models import Task
from chalicelib.db.rollup_models import TaskRollupMark
from chalicelib.db.session import Database
from chalicelib.domain.tasks import TERMINAL
from chalicelib.engines import histogram
from chalicelib.observability import logger

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
Span = tuple[datetime, datetime]


def floor_hour(value: datetime) -> datetime:
    return value.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)


def ceil_hour(value: datetime) -> datetime:
    floor = floor_hour(value)
    return floor if floor == value else floor + HOUR


def floor_day(value: datetime) -> datetime:
    return floor_hour(value).replace(hour=0)


def ceil_day(value: datetime) -> datetime:
    floor = floor_day(value)
    return floor if floor == value else floor + DAY


@dataclass(frozen=True)
class Plan:
    """Which parts of a range come from where; every instant of the range is in exactly one span."""

    raw: list[Span] = field(default_factory=list)
    hours: list[Span] = field(default_factory=list)
    days: list[Span] = field(default_factory=list)

    @property
    def uses_rollups(self) -> bool:
        return bool(self.hours or self.days)


def plan(start: datetime, end: datetime, mark: datetime | None, bucket: str) -> Plan:
    """The spans of [start, end) to read raw, from hour rows and from day rows (day rows only for a per-day
    series: an hourly series cannot split them)."""
    lo = ceil_hour(start)
    hi = None if mark is None else min(floor_hour(end), floor_hour(mark))
    if hi is None or lo >= hi:
        return Plan(raw=[(start, end)])
    raw = [s for s in ((start, lo), (hi, end)) if s[0] < s[1]]
    if bucket == "day":
        dlo, dhi = ceil_day(lo), floor_day(hi)
        if dlo < dhi:
            hours = [s for s in ((lo, dlo), (dhi, hi)) if s[0] < s[1]]
            return Plan(raw=raw, hours=hours, days=[(dlo, dhi)])
    return Plan(raw=raw, hours=[(lo, hi)])


def read_mark(session: Session, user_id: uuid.UUID | None) -> datetime | None:
    """The caller's mark, or for an admin (`user_id=None`) every user's smallest; None before any compaction."""
    if user_id is None:
        return session.scalar(select(func.min(TaskRollupMark.compacted_until)))
    return session.scalar(select(TaskRollupMark.compacted_until).where(TaskRollupMark.user_id == user_id))


# --- compaction ------------------------------------------------------------------------------------------

_TERMINAL = tuple(sorted(s.value for s in TERMINAL))

_CREATE_MARKS = text("""
INSERT INTO task_rollup_marks (user_id, compacted_until, updated_at)
SELECT t.user_id, date_trunc('hour', min(t.created_at), 'UTC'), now()
FROM tasks t
WHERE NOT EXISTS (SELECT 1 FROM task_rollup_marks m WHERE m.user_id = t.user_id)
GROUP BY t.user_id
ON CONFLICT (user_id) DO NOTHING
""")

_DUE = text("""
SELECT user_id, compacted_until FROM task_rollup_marks
WHERE compacted_until < :horizon ORDER BY compacted_until, user_id LIMIT :limit
""")

_HOUR_ROWS = text("""
INSERT INTO task_rollups (user_id, grain, period_start, agent_type, agent_id, status, error_code, n)
SELECT user_id, 'hour', date_trunc('hour', created_at, 'UTC'), agent_type, agent_id, status,
       left(error->>'code', 64), count(*)
FROM tasks WHERE user_id = :user_id AND created_at >= :mark AND created_at < :target
GROUP BY 1, 3, 4, 5, 6, 7
""")

_HOUR_HISTOGRAMS = text(f"""
INSERT INTO task_latency_histograms (user_id, grain, period_start, metric, bucket, n)
SELECT user_id, 'hour', period, metric, bucket, count(*) FROM (
    SELECT t.user_id, date_trunc('hour', t.created_at, 'UTC') AS period, m.metric,
           CASE WHEN m.seconds <= {histogram.BASE} THEN 0
                ELSE least(ceil(ln(m.seconds / {histogram.BASE}) / ln({histogram.GAMMA})),
                           {histogram.MAX_BUCKET})::smallint END AS bucket
    FROM tasks t
    CROSS JOIN LATERAL (VALUES ('run', extract(epoch FROM t.completed_at - t.started_at)),
                               ('e2e', extract(epoch FROM t.completed_at - t.created_at))) AS m(metric, seconds)
    WHERE t.user_id = :user_id AND t.created_at >= :mark AND t.created_at < :target
      AND t.status = 'completed' AND m.seconds IS NOT NULL
) d GROUP BY user_id, period, metric, bucket
""")

_DAY_ROWS = text("""
INSERT INTO task_rollups (user_id, grain, period_start, agent_type, agent_id, status, error_code, n)
SELECT user_id, 'day', date_trunc('day', period_start, 'UTC'), agent_type, agent_id, status, error_code, sum(n)
FROM task_rollups WHERE user_id = :user_id AND grain = 'hour' AND period_start >= :dlo AND period_start < :dhi
GROUP BY 1, 3, 4, 5, 6, 7
""")

_DAY_HISTOGRAMS = text("""
INSERT INTO task_latency_histograms (user_id, grain, period_start, metric, bucket, n)
SELECT user_id, 'day', date_trunc('day', period_start, 'UTC'), metric, bucket, sum(n)
FROM task_latency_histograms
WHERE user_id = :user_id AND grain = 'hour' AND period_start >= :dlo AND period_start < :dhi
GROUP BY 1, 3, 4, 5
""")

_MOVE_MARK = text("""
UPDATE task_rollup_marks SET compacted_until = :target, updated_at = now()
WHERE user_id = :user_id AND compacted_until = :mark
""")


@dataclass(frozen=True)
class CompactionReport:
    users: int
    hours: int
    blocked: int  # users whose next hour still holds an open task

    def as_dict(self) -> dict[str, int]:
        return {"users": self.users, "hours": self.hours, "blocked": self.blocked}


def compact(db: Database, *, now: datetime, grace: timedelta, max_hours: int, max_users: int) -> CompactionReport:
    """Move due users' marks forward over closed hours (at most `max_hours` each, `max_users` users a run)."""
    horizon = floor_hour(now - grace)
    with db.transaction() as session:  # its own commit: a mark exists before any other mark moves past it
        session.execute(_CREATE_MARKS)
    with db.transaction() as session:
        due = list(session.execute(_DUE, {"horizon": horizon, "limit": max_users}))
    users = hours = blocked = 0
    for user_id, mark in due:
        mark = mark.astimezone(timezone.utc)
        moved = _compact_user(db, user_id, mark, min(horizon, mark + max_hours * HOUR))
        if moved:
            users += 1
            hours += moved
        else:
            blocked += 1
    report = CompactionReport(users=users, hours=hours, blocked=blocked)
    logger.info("analytics rollups compacted", extra=report.as_dict())
    return report


class _Overtaken(Exception):
    pass


def _compact_user(db: Database, user_id: uuid.UUID, mark: datetime, target: datetime) -> int:
    """One user's hours in [mark, target), in one transaction of theirs; the hours compacted (0: blocked)."""
    try:
        return _compact_in(db, user_id, mark, target)
    except _Overtaken:
        return 0


def _compact_in(db: Database, user_id: uuid.UUID, mark: datetime, target: datetime) -> int:
    with db.transaction() as session:
        oldest_open = session.scalar(select(func.min(Task.created_at)).where(
            Task.user_id == user_id, Task.created_at >= mark, Task.created_at < target,
            Task.status.not_in(_TERMINAL)))
        if oldest_open is not None:
            target = min(target, floor_hour(oldest_open))
        if target <= mark:
            return 0
        params = {"user_id": user_id, "mark": mark, "target": target}
        session.execute(_HOUR_ROWS, params)
        session.execute(_HOUR_HISTOGRAMS, params)
        dlo, dhi = floor_day(mark), floor_day(target)
        if dlo < dhi:  # the days that are compacted whole now (the mark's own day was not before)
            session.execute(_DAY_ROWS, {"user_id": user_id, "dlo": dlo, "dhi": dhi})
            session.execute(_DAY_HISTOGRAMS, {"user_id": user_id, "dlo": dlo, "dhi": dhi})
        if session.execute(_MOVE_MARK, params).rowcount != 1:  # type: ignore[attr-defined]
            raise _Overtaken  # another compactor moved the mark first: its rows stand, ours roll back
    return int((target - mark) / HOUR)
