"""The analytics engine: counts, latency percentiles, failure reasons and a time series over the caller's
tasks and workflow runs (an admin's cover everyone's, and say `"scope": "all"`).

Everything is aggregated in Postgres, in a fixed number of statements whatever the number of tasks
(tests/integration/test_engine_analytics.py counts them): seven — the caller's role, the rollup mark, one
GROUPING SETS statement for counts, failures, agents and the per-bucket points, the task percentiles, and
runs' counts, percentiles and series.

Task figures read rollups where the compactor has summarised the range's closed hours
(chalicelib/engines/rollups.py) and `tasks` for the rest, so a week of 100,000 tasks costs about what a week
of 1,000 does (bench/engine_analytics.py). Percentiles are exact (`percentile_cont`) when no rollup is read,
and estimated from log-spaced histograms otherwise (`"method": "histogram"`, within 2.4 % of a duration at
that rank). Runs are read directly (their rows are a step's, not a task's, worth).
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

from sqlalchemy import ColumnElement, Select, Subquery, func, literal, literal_column, select, union_all
from sqlalchemy.orm import Session

from chalicelib.db.models import Task
from chalicelib.db.rollup_models import TaskLatencyHistogram, TaskRollup
from chalicelib.db.workflow_models import WorkflowRun
from chalicelib.domain.tasks import TaskStatus
from chalicelib.engines import Engine, EngineContext, histogram, rollups
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
                "latency_seconds": {"type": "object", "properties": {
                    "run": q.PERCENTILES_SCHEMA, "end_to_end": q.PERCENTILES_SCHEMA,
                    "method": {"enum": ["exact", "histogram"],
                               "description": "exact: percentile_cont over the tasks; histogram: estimated from "
                                              "the rollups' log-spaced histograms"},
                    "relative_error": {"type": "number", "description": "the histogram's bound (histogram only)"}}},
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
            owner = None if admin else ctx.user_id
            spans = rollups.plan(start, end, rollups.read_mark(session, owner), bucket)
            tasks, task_points = _task_figures(session, spans, owner, bucket)
            run_window = [WorkflowRun.created_at >= start, WorkflowRun.created_at < end,
                          *q.scoped(WorkflowRun.user_id, ctx.user_id, admin)]
            runs = _run_figures(session, run_window)
            series = _series(session, task_points, run_window, bucket, first, count)
        return {"scope": "all" if admin else "own",
                "range": {"from": q.iso(start), "to": q.iso(end), "bucket": bucket},
                "tasks": tasks, "runs": runs, "series": series}


def _truncate(value: datetime, bucket: str) -> datetime:
    value = value.astimezone(timezone.utc)
    if bucket == "day":
        return value.replace(hour=0, minute=0, second=0, microsecond=0)
    return value.replace(minute=0, second=0, microsecond=0)


def _combined(spans: rollups.Plan, owner: uuid.UUID | None, bucket: str) -> Subquery:
    """Every task of the range as (status, agent_type, agent_id, code, bucket start, n): raw tasks count 1 each,
    rollup rows their n."""
    parts: list[Select[Any]] = []
    for lo, hi in spans.raw:
        parts.append(select(Task.status, Task.agent_type, Task.agent_id,
                            func.left(Task.error["code"].as_string(), 64).label("code"),
                            func.date_trunc(bucket, Task.created_at, "UTC").label("b"), literal(1).label("n"))
                     .where(Task.created_at >= lo, Task.created_at < hi, *q.owned(Task.user_id, owner)))
    for grain, spans_of in (("hour", spans.hours), ("day", spans.days)):
        for lo, hi in spans_of:
            parts.append(select(TaskRollup.status, TaskRollup.agent_type, TaskRollup.agent_id,
                                TaskRollup.error_code.label("code"),
                                func.date_trunc(bucket, TaskRollup.period_start, "UTC").label("b"), TaskRollup.n)
                         .where(TaskRollup.grain == grain, TaskRollup.period_start >= lo,
                                TaskRollup.period_start < hi, *q.owned(TaskRollup.user_id, owner)))
    return union_all(*parts).subquery("c")


def _task_figures(session: Session, spans: rollups.Plan, owner: uuid.UUID | None,
                  bucket: str) -> tuple[dict[str, Any], dict[datetime, dict[str, int]]]:
    """Counts, failures, busiest agents and the per-bucket points in one GROUPING SETS statement over the
    combined rows, then the latency percentiles in a second."""
    c = _combined(spans, owner, bucket)
    grouped = session.execute(
        select(c.c.status, c.c.agent_type, c.c.agent_id, c.c.code, c.c.b,
               func.grouping(c.c.agent_type).label("g_type"), func.grouping(c.c.agent_id).label("g_agent"),
               func.grouping(c.c.code).label("g_code"), func.grouping(c.c.b).label("g_b"),
               func.sum(c.c.n).label("n"))
        .group_by(literal_column("GROUPING SETS ((c.status), (c.agent_type), (c.agent_id), (c.status, c.code), "
                                 "(c.b, c.status))"))).all()
    by_status: dict[str, int] = {}
    by_type: dict[str, int] = {}
    by_agent: dict[str, int] = {}
    failures: dict[str, int] = {}
    points: dict[datetime, dict[str, int]] = {}
    for row in grouped:
        n = int(row.n)
        if row.g_type == 0:
            by_type[row.agent_type] = n
        elif row.g_agent == 0:
            by_agent[str(row.agent_id)] = n
        elif row.g_code == 0:
            if row.status in FAILED:
                code = row.code or "UNKNOWN"
                failures[code] = failures.get(code, 0) + n
        elif row.g_b == 0:
            p = points.setdefault(_utc(row.b), {"tasks": 0, "completed": 0, "failed": 0})
            p["tasks"] += n
            if row.status == TaskStatus.COMPLETED.value:
                p["completed"] += n
            elif row.status in FAILED:
                p["failed"] += n
        else:
            by_status[row.status] = n
    top = sorted(by_agent.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_AGENTS]
    figures = {
        "total": sum(by_status.values()), "by_status": by_status, "by_agent_type": by_type,
        "by_agent": dict(top),
        "latency_seconds": (_latency_estimated(session, spans, owner) if spans.uses_rollups
                            else _latency_exact(session, spans, owner)),
        "failures": {"total": sum(failures.values()), "by_code": failures},
    }
    return figures, points


def _raw_windows(spans: rollups.Plan, owner: uuid.UUID | None) -> list[list[ColumnElement[bool]]]:
    return [[Task.created_at >= lo, Task.created_at < hi, *q.owned(Task.user_id, owner)] for lo, hi in spans.raw]


def _latency_exact(session: Session, spans: rollups.Plan, owner: uuid.UUID | None) -> dict[str, Any]:
    """`percentile_cont` over the tasks themselves (a range no rollup covers: a single raw span)."""
    (window,) = _raw_windows(spans, owner)
    run_time = q.seconds(Task.completed_at, Task.started_at)
    end_to_end = q.seconds(Task.completed_at, Task.created_at)
    done = Task.status == TaskStatus.COMPLETED.value
    lat = session.execute(
        select(func.count(run_time).filter(done).label("n_run"), func.count(end_to_end).filter(done).label("n_e2e"),
               *q.percentiles(run_time, LATENCY, "run", done),
               *q.percentiles(end_to_end, LATENCY, "e2e", done))
        .where(*window)).one()
    return {"run": q.percentile_values(lat, LATENCY, "run", lat.n_run),
            "end_to_end": q.percentile_values(lat, LATENCY, "e2e", lat.n_e2e), "method": "exact"}


def _latency_estimated(session: Session, spans: rollups.Plan, owner: uuid.UUID | None) -> dict[str, Any]:
    """Percentiles from the rollups' histograms merged with the raw spans' tasks, bucketed the same way."""
    done = Task.status == TaskStatus.COMPLETED.value
    parts: list[Any] = []
    for window in _raw_windows(spans, owner):
        for metric, seconds in (("run", q.seconds(Task.completed_at, Task.started_at)),
                                ("e2e", q.seconds(Task.completed_at, Task.created_at))):
            parts.append(select(literal(metric).label("metric"), histogram.bucket_sql(seconds).label("bucket"),
                                literal(1).label("n")).where(*window, done, seconds.is_not(None)))
    H = TaskLatencyHistogram
    for grain, spans_of in (("hour", spans.hours), ("day", spans.days)):
        for lo, hi in spans_of:
            parts.append(select(H.metric, H.bucket, H.n).where(H.grain == grain, H.period_start >= lo,
                                                                H.period_start < hi, *q.owned(H.user_id, owner)))
    h = union_all(*parts).subquery("h")
    counts: dict[str, dict[int, int]] = {"run": {}, "e2e": {}}
    for row in session.execute(select(h.c.metric, h.c.bucket, func.sum(h.c.n).label("n"))
                               .group_by(h.c.metric, h.c.bucket)):
        counts[row.metric][int(row.bucket)] = int(row.n)
    out: dict[str, Any] = {}
    for name, metric in (("run", "run"), ("end_to_end", "e2e")):
        out[name] = {"count": sum(counts[metric].values()), **histogram.percentiles(counts[metric], LATENCY)}
    return {**out, "method": "histogram", "relative_error": round(histogram.RELATIVE_ERROR, 4)}


def _run_figures(session: Session, window: list[Any]) -> dict[str, Any]:
    by_status = {r.status: r.n for r in session.execute(
        select(WorkflowRun.status, func.count().label("n")).where(*window).group_by(WorkflowRun.status))}
    duration = q.seconds(WorkflowRun.finished_at, WorkflowRun.created_at)
    row = session.execute(select(func.count(duration).label("n"), *q.percentiles(duration, LATENCY, "d"))
                          .where(*window)).one()
    return {"total": sum(by_status.values()), "by_status": by_status,
            "duration_seconds": q.percentile_values(row, LATENCY, "d", row.n)}


def _series(session: Session, task_points: dict[datetime, dict[str, int]], run_window: list[Any], bucket: str,
            first: datetime, count: int) -> list[dict[str, Any]]:
    """Per bucket: tasks created, of which completed and failed, and runs created (empty buckets are 0)."""
    r_start = func.date_trunc(bucket, WorkflowRun.created_at, "UTC").label("b")
    runs = select(r_start, func.count().label("n")).where(*run_window).group_by(literal_column("1"))
    run_points = {_utc(row.b): row.n for row in session.execute(runs)}
    step = BUCKETS[bucket]
    out = []
    for i in range(count):
        at = first + i * step
        p = task_points.get(at, {})
        out.append({"start": q.iso(at), "tasks": p.get("tasks", 0), "completed": p.get("completed", 0),
                    "failed": p.get("failed", 0), "runs": run_points.get(at, 0)})
    return out


def _utc(value: datetime) -> datetime:
    # date_trunc(..., 'UTC') answers a timestamp without zone: the UTC wall time
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
