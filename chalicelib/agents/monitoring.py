"""The `monitoring` agent: checks dependency health, heartbeats and dead-letter queues, and raises alerts.

Your agents that heartbeat and went silent longer than the threshold are
marked `offline` (in a short transaction of their own); a dependency that is down, agents
just marked offline and messages in a DLQ each raise an alert on the SNS topic
`<queue_prefix>-alerts`. The same checks run every 5 minutes over every
agent (functions/monitor.py). Standing conditions are re-alerted at most once
per cooldown (chalicelib.services.alerts).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.agents.base import Agent, AgentContext, AgentOutput
from chalicelib.errors import AgentError

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
    #: raise alerts on the SNS topic (false: only report them in the result).
    publish_alerts: bool = True


class MonitoringAgent(Agent):
    type = "monitoring"
    Input = MonitoringInput
    Config = MonitoringConfig
    description = ("Checks the platform's dependencies (database, Redis, queues), your agents' heartbeats and the "
                   "dead-letter queues; marks agents with a stale heartbeat offline and raises alerts on the SNS "
                   "alert topic when a threshold is crossed.")
    capabilities = ("dependency-health", "heartbeats", "offline-detection", "dlq-depth", "sns-alerts")
    example_input = {"checks": ["dependencies", "heartbeats", "dlq"], "stale_after_seconds": 300}

    def run(self, data: BaseModel, config: Mapping[str, Any], ctx: AgentContext | None = None) -> AgentOutput:
        assert isinstance(data, MonitoringInput)
        if ctx is None or ctx.ports is None:
            raise AgentError("the monitoring agent needs the platform's adapters (no task context)")
        ports = ctx.ports
        settings = MonitoringConfig.model_validate(dict(config))
        stale = data.stale_after_seconds or settings.stale_after_seconds or ports.settings.heartbeat_stale_seconds
        # The offline marks commit in their own short transaction; health checks and alerts run outside it.
        report = ports.watchdog.run(ctx.transaction, now=ctx.now, stale_seconds=stale, user_id=ctx.user_id,
                                    checks=data.checks)
        context = {"user_id": str(ctx.user_id), "task_id": str(ctx.task_id)}
        if settings.publish_alerts:
            alerts = [ports.alerts.publish(alert, context) for alert in report.alerts]
        else:
            alerts = [{"kind": a.kind, "severity": a.severity, "summary": a.summary, "status": "not_published"}
                      for a in report.alerts]
        failed = [a for a in alerts if a["status"] == "error"]
        if any(a["kind"] == "agents_offline" for a in failed):
            # An offline transition is alerted once, when it happens: if nobody could be told, undo it
            # (the next check marks, and alerts, them again).
            _unmark(ctx, report.offline)
            if ctx.attempt < ports.settings.max_task_attempts:
                raise AlertNotDeliveredYet("the agents_offline alert could not be published; retrying")
            raise AlertDeliveryError("agents went offline but the alert could not be published; they stay "
                                     "active until an alert can be sent", {"alerts": alerts, "offline": report.offline})
        output = {"checked": report.checked, "stale_after_seconds": stale, "dependencies": report.dependencies,
                  "offline": report.offline, "queues": report.queues, "alerts": alerts,
                  "healthy": not report.alerts}
        return AgentOutput(output=output, metrics={"alerts": len(alerts), "agents_marked_offline": len(report.offline),
                                                   "alerts_failed": len(failed)})


def _unmark(ctx: AgentContext, offline: list[dict[str, Any]]) -> None:
    from sqlalchemy import update

    from chalicelib.db.models import Agent as AgentRow

    ids = [uuid.UUID(a["agent_id"]) for a in offline]
    with ctx.transaction() as session:
        session.execute(update(AgentRow).where(AgentRow.id.in_(ids), AgentRow.status == "offline")
                        .values(status="active", updated_at=AgentRow.updated_at)
                        .execution_options(synchronize_session=False))


class AlertDeliveryError(AgentError):
    code = "ALERT_DELIVERY_FAILED"


class AlertNotDeliveredYet(RuntimeError):
    """Not an AgentError on purpose: SQS redelivers the task (its offline marks were undone first)."""
