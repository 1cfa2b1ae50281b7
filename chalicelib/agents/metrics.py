"""The `metrics` agent: throughput, latency percentiles and error rate of tasks over a time window.

Computed from the database (chalicelib.services.task_stats defines each
number), over the owner's tasks — or every user's when the owner is an admin —
overall and broken down by agent type and/or agent id. The overall and
per-type numbers are also published as CloudWatch metrics through the Embedded
Metric Format (one JSON line per dimension set on stdout); per-agent-id numbers
stay in the result, to keep CloudWatch's metric count bounded.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.agents.base import Agent, AgentContext, AgentOutput
from chalicelib.errors import AgentError

Breakdown = Literal["agent_type", "agent_id"]
DEFAULT_BREAKDOWN: tuple[Breakdown, ...] = ("agent_type",)
ALL, OWN = "all", "own"


class ScopeForbiddenError(AgentError):
    code = "SCOPE_FORBIDDEN"


class MetricsInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window_minutes: int = Field(default=60, ge=1, le=7 * 24 * 60, description="The window ends when the task runs.")
    group_by: list[Breakdown] = Field(default_factory=lambda: list(DEFAULT_BREAKDOWN), max_length=2,
                                      description="Breakdowns to add to the overall numbers.")
    scope: Literal["own", "all"] | None = Field(
        default=None, description="own: your tasks; all: every user's (admins only). Default: all for admins.")


class MetricsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: publish the numbers as CloudWatch metrics (EMF lines on stdout).
    publish_emf: bool = True


class MetricsAgent(Agent):
    type = "metrics"
    Input = MetricsInput
    Config = MetricsConfig
    description = ("Computes task throughput, end-to-end and processing latency percentiles (p50/p90/p99), error "
                   "rate and counts by status over a time window, by agent type and agent id, and publishes them "
                   "as CloudWatch metrics (EMF).")
    capabilities = ("throughput", "latency-percentiles", "error-rate", "cloudwatch-emf")
    example_input = {"window_minutes": 60, "group_by": ["agent_type", "agent_id"]}

    def run(self, data: BaseModel, config: Mapping[str, Any], ctx: AgentContext | None = None) -> AgentOutput:
        assert isinstance(data, MetricsInput)
        if ctx is None:
            raise AgentError("the metrics agent needs the database (no task context)")
        from sqlalchemy import select

        from chalicelib.db.models import User
        from chalicelib.services.task_stats import TaskStats

        settings = MetricsConfig.model_validate(dict(config))
        with ctx.transaction() as session:  # reads only
            is_admin = session.scalar(select(User.role).where(User.id == ctx.user_id)) == "admin"
            scope = data.scope or (ALL if is_admin else OWN)
            if scope == ALL and not is_admin:
                raise ScopeForbiddenError("only an admin may compute metrics over every user's tasks",
                                          {"scope": scope})
            breakdowns = list(dict.fromkeys(data.group_by))
            stats = TaskStats(session, now=ctx.now, window_minutes=data.window_minutes,
                              user_id=None if scope == ALL else ctx.user_id).compute(breakdowns)
        published = 0
        if settings.publish_emf:
            published = _publish(stats, scope_label="platform" if scope == ALL else str(ctx.user_id), ctx=ctx)
        start = ctx.now - timedelta(minutes=data.window_minutes)
        output = {"window": {"start": start.isoformat(), "end": ctx.now.isoformat(),
                             "minutes": data.window_minutes},
                  "scope": scope, **stats, "emf_documents": published}
        return AgentOutput(output=output, metrics={"groups": sum(len(g) for g in stats["groups"].values()),
                                                   "emf_documents": published})


def emf_documents(stats: dict[str, Any], *, scope_label: str, ctx: AgentContext) -> list[dict[str, Any]]:
    from chalicelib.observability import METRICS_NAMESPACE
    from chalicelib.services.emf import Metric, document

    def metrics(group: dict[str, Any]) -> list[Metric]:
        out = [Metric("TasksCreated", "Count", sum(group["counts_by_status"].values())),
               Metric("TasksCompleted", "Count", group["completed"]),
               Metric("TasksFailed", "Count", group["finished"]["failed"] + group["finished"]["timed_out"]),
               Metric("Throughput", "Count/Second", round(group["throughput_per_minute"] / 60, 9))]
        if group["error_rate"] is not None:
            out.append(Metric("ErrorRate", "Percent", round(group["error_rate"] * 100, 4)))
        for kind, prefix in (("end_to_end", "Latency"), ("processing", "ProcessingTime")):
            for label, value in group["latency_ms"][kind].items():
                if value is not None:
                    out.append(Metric(f"{prefix}{label.upper()}", "Milliseconds", value))
        return out

    base = {"service": "ymera", "scope": scope_label}
    docs = [document(METRICS_NAMESPACE, base, metrics(stats["overall"]), ctx.now)]
    for group in stats["groups"].get("agent_type", []):
        docs.append(document(METRICS_NAMESPACE, {**base, "agent_type": group["agent_type"]}, metrics(group), ctx.now))
    return docs


def _publish(stats: dict[str, Any], *, scope_label: str, ctx: AgentContext) -> int:
    from chalicelib.services.emf import emit, stdout_writer

    writer = ctx.extras.get("emf_writer", stdout_writer)
    return emit(emf_documents(stats, scope_label=scope_label, ctx=ctx), writer)
