"""The performance engine: per agent type, what the tasks of a range observed (duration, errors, retries,
queue wait) and what to deploy its consumer with (timeout, memory, batch size, max concurrency), each
recommendation with the figures and the arithmetic behind it.

Three statements whatever the number of tasks: the caller's role, one GROUP BY agent_type with the
percentiles, and one for each type's busiest minute (the arrival rate concurrency is sized for).
Current values come from settings (`engine_consumer_*`, mirroring infra/manifest.py; see config.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy import func, literal_column, select
from sqlalchemy.orm import Session

from chalicelib.config import Settings
from chalicelib.db.models import Task
from chalicelib.domain.tasks import TaskStatus
from chalicelib.engines import Engine, EngineContext
from chalicelib.engines import sql as q

QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
#: a timeout and a batch leave this much room over the slowest observed work.
HEADROOM = 1.5
#: fewer finished tasks than this: the recommendation is marked low-confidence.
MIN_SAMPLES = 30
#: SQS event sources deliver at most 10 records per batch without a batching window.
MAX_BATCH = 10
#: Lambda's limits: timeout, and SQS event source MaximumConcurrency at least 2.
MAX_TIMEOUT, MIN_TIMEOUT, MIN_CONCURRENCY = 900, 10, 2
#: a CPU-bound consumer whose p95 uses more than this share of its timeout gets more memory (= more CPU).
MEMORY_PRESSURE = 0.5
DONE = TaskStatus.COMPLETED.value
FAILED = (TaskStatus.FAILED.value, TaskStatus.TIMED_OUT.value)


@dataclass(frozen=True)
class Deployed:
    timeout: int
    memory: int
    batch_size: int
    max_concurrency: int
    provider_backed: bool


def deployed(agent_type: str, settings: Settings) -> Deployed:
    """What the type's consumer runs with today (infra/manifest.py's FunctionSpec, through settings)."""
    from chalicelib.agents import registry as agents

    # the orchestrator waits on its children's model calls: the manifest deploys it like the provider-backed
    # types (as chalicelib.workflows.asl.default_visibility knows too)
    provider = agent_type == "orchestrator"
    if not provider and agent_type in agents.IMPLEMENTATIONS:
        provider = bool(agents.get_agent(agent_type).provider_backed)
    if provider:
        return Deployed(settings.function_timeout_seconds, settings.engine_consumer_memory_mb,
                        settings.engine_provider_consumer_batch_size, settings.engine_provider_consumer_max_concurrency,
                        True)
    return Deployed(settings.engine_consumer_timeout_seconds, settings.engine_consumer_memory_mb,
                    settings.engine_consumer_batch_size, settings.engine_consumer_max_concurrency, False)


_STATS = {"type": "object", "additionalProperties": {"type": ["number", "null"]}}
_REC = {"type": "object", "required": ["current", "recommended", "reason"],
        "properties": {"current": {"type": "integer"}, "recommended": {"type": "integer"},
                       "reason": {"type": "string"}}}


class PerformanceEngine(Engine):
    name: ClassVar[str] = "performance"
    description: ClassVar[str] = (
        "Per agent type over your tasks created in a range: observed run time (p50/p95/p99), error rate "
        "(failed or timed out), retry rate (attempts > 1), queue wait (started - created), and tuning "
        "recommendations for its consumer — timeout, memory, batch size, max concurrency — each with the "
        "figures behind it. Admins see every user's tasks (`scope: all`).")
    input_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "properties": {**q.RANGE_PROPERTIES,
                       "agent_types": {"type": "array", "items": {"type": "string", "maxLength": 32},
                                       "maxItems": 50, "description": "Only these types (default: all seen)."}},
    }
    output_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "required": ["scope", "range", "agent_types"],
        "properties": {
            "scope": {"enum": ["own", "all"]},
            "range": {"type": "object"},
            "agent_types": {"type": "array", "items": {"type": "object", "properties": {
                "agent_type": {"type": "string"}, "tasks": {"type": "integer"}, "finished": {"type": "integer"},
                "error_rate": {"type": ["number", "null"]}, "retry_rate": {"type": ["number", "null"]},
                "duration_seconds": _STATS, "queue_wait_seconds": _STATS,
                "peak_arrivals_per_minute": {"type": "integer"}, "low_confidence": {"type": "boolean"},
                "recommendations": {"type": "object", "properties": {
                    "timeout_seconds": _REC, "memory_mb": _REC, "batch_size": _REC, "max_concurrency": _REC}}}}},
        },
    }
    example: ClassVar[dict[str, Any]] = {"from": "2026-11-25T00:00:00Z", "to": "2026-12-02T00:00:00Z"}

    def run(self, ctx: EngineContext, input: dict[str, Any]) -> dict[str, Any]:  # noqa: A002
        start, end = q.time_range(input)
        with ctx.transaction() as session:
            admin = q.is_admin(session, ctx.user_id)
            window = [Task.created_at >= start, Task.created_at < end, *q.scoped(Task.user_id, ctx.user_id, admin)]
            if input.get("agent_types"):
                window.append(Task.agent_type.in_(list(input["agent_types"])))
            rows, peaks = _observe(session, window)
        types = [_report(row, peaks.get(row.agent_type, 0), deployed(row.agent_type, ctx.settings)) for row in rows]
        return {"scope": "all" if admin else "own", "range": {"from": q.iso(start), "to": q.iso(end)},
                "agent_types": types}


def _observe(session: Session, window: list[Any]) -> tuple[list[Any], dict[str, int]]:
    run_time = q.seconds(Task.completed_at, Task.started_at)
    wait = q.seconds(Task.started_at, Task.created_at)
    done = Task.status == DONE
    rows = session.execute(
        select(Task.agent_type, func.count().label("n"),
               func.count().filter(Task.status.in_((DONE, *FAILED, TaskStatus.CANCELLED.value))).label("finished"),
               func.count().filter(Task.status.in_(FAILED)).label("failed"),
               func.count().filter(Task.attempts > 1).label("retried"),
               func.count(run_time).filter(done).label("n_d"), func.avg(run_time).filter(done).label("mean_d"),
               func.max(run_time).filter(done).label("max_d"),
               *q.percentiles(run_time, QUANTILES, "d", done),
               func.count(wait).label("n_w"), *q.percentiles(wait, {"p50": 0.5, "p95": 0.95}, "w"))
        .where(*window).group_by(Task.agent_type).order_by(Task.agent_type)).all()
    per_minute = (select(Task.agent_type, func.count().label("n")).where(*window)
                  .group_by(Task.agent_type, func.date_trunc("minute", Task.created_at, "UTC")).subquery())
    peaks = {r.agent_type: int(r.peak) for r in session.execute(
        select(per_minute.c.agent_type, func.max(per_minute.c.n).label("peak")).group_by(literal_column("1")))}
    return list(rows), peaks


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _report(row: Any, peak: int, now: Deployed) -> dict[str, Any]:
    duration = q.percentile_values(row, QUANTILES, "d", row.n_d)
    duration["mean"] = None if row.mean_d is None else round(float(row.mean_d), 3)
    duration["max"] = None if row.max_d is None else round(float(row.max_d), 3)
    wait = q.percentile_values(row, {"p50": 0.5, "p95": 0.95}, "w", row.n_w)
    return {"agent_type": row.agent_type, "tasks": row.n, "finished": row.finished,
            "error_rate": _rate(row.failed, row.finished), "retry_rate": _rate(row.retried, row.n),
            "duration_seconds": duration, "queue_wait_seconds": wait, "peak_arrivals_per_minute": peak,
            "low_confidence": row.n_d < MIN_SAMPLES,
            "recommendations": recommend(duration, peak, now)}


def recommend(duration: dict[str, Any], peak_per_minute: int, now: Deployed) -> dict[str, dict[str, Any]]:
    """Pure arithmetic over the observations (unit-tested on its own): each answer says how it was reached."""
    p95, p99, mean = duration.get("p95"), duration.get("p99"), duration.get("mean")
    if p99 is None or p95 is None or mean is None:
        why = "no completed tasks in the range: nothing measured, keep the current value"
        return {k: {"current": v, "recommended": v, "reason": why} for k, v in
                (("timeout_seconds", now.timeout), ("memory_mb", now.memory), ("batch_size", now.batch_size),
                 ("max_concurrency", now.max_concurrency))}
    timeout = min(MAX_TIMEOUT, max(MIN_TIMEOUT, math.ceil(p99 * HEADROOM)))
    rec_timeout = {"current": now.timeout, "recommended": timeout,
                   "reason": f"p99 duration {p99:g} s × {HEADROOM:g} headroom = {p99 * HEADROOM:.1f} s → {timeout} s "
                             f"(bounded to {MIN_TIMEOUT}..{MAX_TIMEOUT} s)"}
    share = p95 / now.timeout
    if not now.provider_backed and share > MEMORY_PRESSURE:
        memory = min(10240, now.memory * 2)
        why = (f"p95 duration {p95:g} s is {share:.0%} of the {now.timeout} s timeout (over {MEMORY_PRESSURE:.0%}): "
               f"Lambda CPU grows with memory, so {now.memory} MB × 2 = {memory} MB")
    else:
        memory = now.memory
        why = (f"p95 duration {p95:g} s is {share:.0%} of the {now.timeout} s timeout"
               + (" and the work waits on a model, not the CPU" if now.provider_backed else "")
               + f": keep {now.memory} MB")
    rec_memory = {"current": now.memory, "recommended": memory, "reason": why}
    # a whole batch must finish inside the (recommended) timeout with the same headroom
    fits = math.floor(timeout / (p95 * HEADROOM)) if p95 > 0 else MAX_BATCH
    batch = max(1, min(MAX_BATCH, fits))
    rec_batch = {"current": now.batch_size, "recommended": batch,
                 "reason": f"timeout {timeout} s ÷ (p95 {p95:g} s × {HEADROOM:g}) = {fits} tasks per batch → {batch} "
                           f"(1..{MAX_BATCH})"}
    # Little's law: busy instances = arrival rate × time in service, at the busiest minute
    rate = peak_per_minute / 60
    busy = rate * mean
    concurrency = max(MIN_CONCURRENCY, math.ceil(busy * HEADROOM))
    rec_conc = {"current": now.max_concurrency, "recommended": concurrency,
                "reason": f"peak {peak_per_minute} tasks/min = {rate:.2f}/s × mean duration {mean:g} s = {busy:.2f} "
                          f"busy instances × {HEADROOM:g} → {concurrency} (at least {MIN_CONCURRENCY})"}
    return {"timeout_seconds": rec_timeout, "memory_mb": rec_memory, "batch_size": rec_batch,
            "max_concurrency": rec_conc}
