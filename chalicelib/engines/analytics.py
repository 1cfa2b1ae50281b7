"""The analytics engine: counts, latency percentiles, failure reasons and a time series over the caller's
tasks and workflow runs (an admin's cover everyone's, and say `"scope": "all"`).

Everything is aggregated in Postgres, in a fixed number of statements whatever the number of tasks
(tests/integration/test_engine_analytics.py counts them): nine — the caller's role, one GROUPING SETS
count, the task percentiles, failure codes, the top agents, the task series, and runs' counts, percentiles
and series.
The range filter is on `created_at`, served by the (user_id, created_at) indexes and, for an admin's
all-users scope, by ix_tasks_created_at (migration 0010_engine_indexes).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

from sqlalchemy import Select, func, literal_column, select
from sqlalchemy.orm import Session

from chalicelib.db.models import Task
from chalicelib.db.workflow_models import WorkflowRun
from chalicelib.domain.tasks import TaskStatus
from chalicelib.engines import Engine, EngineContext
from chalicelib.engines import sql as q
from chalicelib.engines.registry import EngineInputInvalidError

LATENCY = {"p50": 0.5, "p90": 0.9, "p99": 0.99}
BUCKETS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
FAILED = (TaskStatus.FAILED.value, TaskStatus.TIMED_OUT.value)
#: the by-agent breakdown lists the busiest agents only (an admin's covers every user's agents).
TOP_AGENTS = 50


class AnalyticsEngine(Engine):
    name: ClassVar[str] = "analytics"
    description: ClassVar[str] = (
        "Counts by status, agent type and agent; latency percentiles (run time = completed_at - started_at, "
        "end to end = completed_at - created_at); failure reasons by error code; and a per-hour or per-day "
        "time series of your tasks and workflow runs created in a range. Admins see every user's "
        "(`scope: all`).")
    input_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "properties": {**q.RANGE_PROPERTIES,
                       "bucket": {"enum": list(BUCKETS), "default": "day",
                                  "description": "Time series granularity; at most "
                                                 "`engine_analytics_max_buckets` (2,000) buckets."}},
    }
    output_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "required": ["scope", "range", "tasks", "runs", "series"],
        "properties": {
            "scope": {"enum": ["own", "all"]},
            "range": {"type": "object", "properties": {"from": {"type": "string"}, "to": {"type": "string"},
                                                       "bucket": {"enum": list(BUCKETS)}}},
            "tasks": {"type": "object", "properties": {
                "total": {"type": "integer"},
                "by_status": {"type": "object", "additionalProperties": {"type": "integer"}},
                "by_agent_type": {"type": "object", "additionalProperties": {"type": "integer"}},
                "by_agent": {"type": "object", "additionalProperties": {"type": "integer"}},
                "latency_seconds": {"type": "object", "properties": {"run": q.PERCENTILES_SCHEMA,
                                                                     "end_to_end": q.PERCENTILES_SCHEMA}},
                "failures": {"type": "object", "properties": {
                    "total": {"type": "integer"},
                    "by_code": {"type": "object", "additionalProperties": {"type": "integer"}}}}}},
            "runs": {"type": "object", "properties": {
                "total": {"type": "integer"},
                "by_status": {"type": "object", "additionalProperties": {"type": "integer"}},
                "duration_seconds": q.PERCENTILES_SCHEMA}},
            "series": {"type": "array", "items": {"type": "object", "properties": {
                "start": {"type": "string"}, "tasks": {"type": "integer"}, "completed": {"type": "integer"},
                "failed": {"type": "integer"}, "runs": {"type": "integer"}}}},
        },
    }
    example: ClassVar[dict[str, Any]] = {"from": "2026-11-25T00:00:00Z", "to": "2026-12-02T00:00:00Z",
                                         "bucket": "day"}

    def run(self, ctx: EngineContext, input: dict[str, Any]) -> dict[str, Any]:  # noqa: A002
        start, end = q.time_range(input)
        bucket = str(input.get("bucket", "day"))
        first = _truncate(start, bucket)
        count = math.ceil((end - first) / BUCKETS[bucket])
        limit = ctx.settings.engine_analytics_max_buckets
        if count > limit:
            raise EngineInputInvalidError(
                f"the range holds {count} {bucket} buckets; at most {limit} are allowed (narrow the range "
                f"or use a coarser bucket)", {"buckets": count, "max_buckets": limit, "bucket": bucket})
        with ctx.transaction() as session:
            admin = q.is_admin(session, ctx.user_id)
            window = [Task.created_at >= start, Task.created_at < end,
                      *q.scoped(Task.user_id, ctx.user_id, admin)]
            tasks = _task_figures(session, window)
            runs = _run_figures(session, [WorkflowRun.created_at >= start, WorkflowRun.created_at < end,
                                          *q.scoped(WorkflowRun.user_id, ctx.user_id, admin)])
            series = _series(session, window, [WorkflowRun.created_at >= start, WorkflowRun.created_at < end,
                                               *q.scoped(WorkflowRun.user_id, ctx.user_id, admin)],
                             bucket, first, count)
        return {"scope": "all" if admin else "own",
                "range": {"from": q.iso(start), "to": q.iso(end), "bucket": bucket},
                "tasks": tasks, "runs": runs, "series": series}


def _truncate(value: datetime, bucket: str) -> datetime:
    value = value.astimezone(timezone.utc)
    if bucket == "day":
        return value.replace(hour=0, minute=0, second=0, microsecond=0)
    return value.replace(minute=0, second=0, microsecond=0)


def _task_figures(session: Session, window: list[Any]) -> dict[str, Any]:
    # one pass: counts per status, per agent type, and the grand total (GROUPING SETS)
    grouped = session.execute(
        select(Task.status, Task.agent_type, func.grouping(Task.status).label("g_status"),
               func.grouping(Task.agent_type).label("g_type"), func.count().label("n"))
        .where(*window)
        .group_by(literal_column("GROUPING SETS ((tasks.status), (tasks.agent_type), ())"))).all()
    by_status: dict[str, int] = {}
    by_type: dict[str, int] = {}
    total = 0
    for row in grouped:
        if row.g_status == 0:
            by_status[row.status] = row.n
        elif row.g_type == 0:
            by_type[row.agent_type] = row.n
        else:
            total = row.n
    run_time = q.seconds(Task.completed_at, Task.started_at)
    end_to_end = q.seconds(Task.completed_at, Task.created_at)
    done = Task.status == TaskStatus.COMPLETED.value
    lat = session.execute(
        select(func.count(run_time).filter(done).label("n_run"), func.count(end_to_end).filter(done).label("n_e2e"),
               *q.percentiles(run_time, LATENCY, "run", done),
               *q.percentiles(end_to_end, LATENCY, "e2e", done))
        .where(*window)).one()
    failures = session.execute(
        select(func.coalesce(Task.error["code"].as_string(), "UNKNOWN").label("code"), func.count().label("n"))
        .where(*window, Task.status.in_(FAILED)).group_by(literal_column("1"))).all()
    agents = session.execute(
        select(Task.agent_id, func.count().label("n")).where(*window).group_by(Task.agent_id)
        .order_by(func.count().desc(), Task.agent_id).limit(TOP_AGENTS)).all()
    return {
        "total": total, "by_status": by_status, "by_agent_type": by_type,
        "by_agent": {str(a.agent_id): a.n for a in agents},
        "latency_seconds": {"run": q.percentile_values(lat, LATENCY, "run", lat.n_run),
                            "end_to_end": q.percentile_values(lat, LATENCY, "e2e", lat.n_e2e)},
        "failures": {"total": sum(f.n for f in failures), "by_code": {f.code: f.n for f in failures}},
    }


def _run_figures(session: Session, window: list[Any]) -> dict[str, Any]:
    by_status = {r.status: r.n for r in session.execute(
        select(WorkflowRun.status, func.count().label("n")).where(*window).group_by(WorkflowRun.status))}
    duration = q.seconds(WorkflowRun.finished_at, WorkflowRun.created_at)
    row = session.execute(select(func.count(duration).label("n"), *q.percentiles(duration, LATENCY, "d"))
                          .where(*window)).one()
    return {"total": sum(by_status.values()), "by_status": by_status,
            "duration_seconds": q.percentile_values(row, LATENCY, "d", row.n)}


def _series(session: Session, task_window: list[Any], run_window: list[Any], bucket: str, first: datetime,
            count: int) -> list[dict[str, Any]]:
    """Per bucket: tasks created, of which completed and failed, and runs created (empty buckets are 0)."""
    t_start = func.date_trunc(bucket, Task.created_at, "UTC").label("b")
    tasks: Select[Any] = (
        select(t_start, func.count().label("n"),
               func.count().filter(Task.status == TaskStatus.COMPLETED.value).label("ok"),
               func.count().filter(Task.status.in_(FAILED)).label("bad"))
        .where(*task_window).group_by(literal_column("1")))
    r_start = func.date_trunc(bucket, WorkflowRun.created_at, "UTC").label("b")
    runs = select(r_start, func.count().label("n")).where(*run_window).group_by(literal_column("1"))
    points: dict[datetime, dict[str, int]] = {}
    for row in session.execute(tasks):
        points.setdefault(_utc(row.b), {})
        points[_utc(row.b)].update(tasks=row.n, completed=row.ok, failed=row.bad)
    for row in session.execute(runs):
        points.setdefault(_utc(row.b), {})["runs"] = row.n
    step = BUCKETS[bucket]
    out = []
    for i in range(count):
        at = first + i * step
        p = points.get(at, {})
        out.append({"start": q.iso(at), "tasks": p.get("tasks", 0), "completed": p.get("completed", 0),
                    "failed": p.get("failed", 0), "runs": p.get("runs", 0)})
    return out


def _utc(value: datetime) -> datetime:
    # date_trunc(..., 'UTC') answers a timestamp without zone: the UTC wall time
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
