"""The `monitoring` agent: checks dependency health, heartbeats and dead-letter queues, and raises alerts.

Your agents that heartbeat and went silent longer than the threshold are
marked `offline` (in a short transaction of their own); a dependency that is down, agents
just marked offline and messages in a DLQ each become an alert *of yours*: an
audit row (`event_type: "alert"`, read with `GET /audit-logs?event_type=alert`),
committed right after. Nothing a user's task raises reaches the operators' SNS
topic — any user could otherwise page them at will; the platform's own conditions
reach the operators from functions/monitor.py, which runs the same checks over
every agent every 5 minutes (deduplicated per cooldown).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.agents.base import Agent, AgentContext, AgentOutput
from chalicelib.errors import AgentError
from chalicelib.services import audit
from chalicelib.services.alerts import Alert
from chalicelib.services.watchdog import ALERT_EVENT

Check = Literal["dependencies", "heartbeats", "dlq"]
ALL_CHECKS: tuple[Check, ...] = ("dependencies", "heartbeats", "dlq")


class MonitoringInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checks: list[Check] = Field(default_factory=lambda: list(ALL_CHECKS), min_length=1,
                                description="Which checks to run.")
    stale_after_seconds: int | None = Field(
        default=None, ge=30, le=7 * 24 * 3600,
        description="Heartbeat age that marks an agent offline. Default: the agent's config, else the platform's.")


class MonitoringConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: heartbeat age that marks an agent offline; None = the platform setting (YMERA_HEARTBEAT_STALE_SECONDS).
    stale_after_seconds: int | None = Field(default=None, ge=30, le=7 * 24 * 3600)
    #: record alerts as your audit rows (false: only report them in the task's result).
    publish_alerts: bool = True


class MonitoringAgent(Agent):
    type = "monitoring"
    Input = MonitoringInput
    Config = MonitoringConfig
    description = ("Checks the platform's dependencies (database, Redis, queues), your agents' heartbeats and the "
                   "dead-letter queues; marks agents with a stale heartbeat offline and records an alert in your audit "
                   "log (GET /audit-logs?event_type=alert) when a threshold is crossed.")
    capabilities = ("dependency-health", "heartbeats", "offline-detection", "dlq-depth", "alerts")
    example_input = {"checks": ["dependencies", "heartbeats", "dlq"], "stale_after_seconds": 300}

    def run(self, data: BaseModel, config: Mapping[str, Any], ctx: AgentContext | None = None) -> AgentOutput:
        assert isinstance(data, MonitoringInput)
        if ctx is None or ctx.ports is None:
            raise AgentError("the monitoring agent needs the platform's adapters (no task context)")
        ports = ctx.ports
        settings = MonitoringConfig.model_validate(dict(config))
        stale = data.stale_after_seconds or settings.stale_after_seconds or ports.settings.heartbeat_stale_seconds
        # The offline marks commit in their own short transaction; health checks run outside any.
        report = ports.watchdog.run(ctx.transaction, now=ctx.now, stale_seconds=stale, user_id=ctx.user_id,
                                    checks=data.checks)
        if settings.publish_alerts:
            alerts = _record(ctx, report.alerts)
        else:
            alerts = [{"kind": a.kind, "severity": a.severity, "summary": a.summary, "status": "not_published"}
                      for a in report.alerts]
        output = {"checked": report.checked, "stale_after_seconds": stale, "dependencies": report.dependencies,
                  "offline": report.offline, "queues": report.queues, "alerts": alerts,
                  "healthy": not report.alerts}
        return AgentOutput(output=output, metrics={"alerts": len(alerts), "agents_marked_offline": len(report.offline)})


def _record(ctx: AgentContext, alerts: list[Alert]) -> list[dict[str, Any]]:
    """The alerts as the task owner's audit rows, in one short transaction (no network, nothing to undo)."""
    if not alerts:
        return []
    with ctx.transaction() as session:
        for alert in alerts:
            audit.record(session, user_id=ctx.user_id, event_type=ALERT_EVENT, action=alert.kind,
                         resource_type="task", resource_id=ctx.task_id,
                         details={"severity": alert.severity, "summary": alert.summary, **alert.details})
    return [{"kind": a.kind, "severity": a.severity, "summary": a.summary, "status": "recorded"} for a in alerts]
