"""Health checks that act: dependency health, stale heartbeats (agents marked offline), DLQ depth.

Shared by the `monitoring` agent (one user's agents, on demand) and
functions/monitor.py (every agent, on a schedule). Each crossed threshold
becomes an `Alert` for chalicelib.services.alerts.

An agent is stale when it heartbeats and its last heartbeat is older than the
threshold — or, for an external agent that never heartbeated, when it was
created longer ago than that (its worker never came up). Managed agents that
never heartbeat are never marked: their consumer is the platform's, watched
through queue depth instead. A heartbeat revives an offline agent
(chalicelib.services.leases).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, or_, update
from sqlalchemy.orm import Session

from chalicelib.db.models import Agent
from chalicelib.domain.agents import AgentStatus
from chalicelib.services.alerts import Alert

if TYPE_CHECKING:
    from chalicelib.container import Container

CHECKS = ("dependencies", "heartbeats", "dlq")
#: audit `event_type` of the alerts a user's own checks raise (and of "your agents went offline").
ALERT_EVENT = "alert"


@dataclass
class WatchReport:
    checked: list[str]
    dependencies: dict[str, Any] | None = None
    offline: list[dict[str, Any]] = field(default_factory=list)
    queues: list[dict[str, Any]] | None = None
    alerts: list[Alert] = field(default_factory=list)


def mark_stale_agents(session: Session, *, now: datetime, stale_seconds: int,
                      user_id: uuid.UUID | None = None) -> list[dict[str, Any]]:
    """Move stale active agents to `offline` in one conditional UPDATE; return what moved."""
    cutoff = now - timedelta(seconds=stale_seconds)
    stale = or_(Agent.last_heartbeat < cutoff,
                and_(Agent.last_heartbeat.is_(None), Agent.mode == "external", Agent.created_at < cutoff))
    scope = [Agent.user_id == user_id] if user_id is not None else []
    rows = session.execute(
        update(Agent)
        .where(Agent.status == AgentStatus.ACTIVE, Agent.deleted_at.is_(None), stale, *scope)
        # updated_at is kept: going offline is the platform's observation, not an edit of the agent.
        .values(status=AgentStatus.OFFLINE.value, updated_at=Agent.updated_at)
        .returning(Agent.id, Agent.user_id, Agent.name, Agent.type, Agent.mode, Agent.last_heartbeat)
        .execution_options(synchronize_session=False)
    ).all()
    return sorted(({"agent_id": str(r.id), "user_id": str(r.user_id), "name": r.name, "type": r.type,
                    "mode": r.mode, "last_heartbeat": r.last_heartbeat.isoformat() if r.last_heartbeat else None,
                    "silent_seconds": round((now - r.last_heartbeat).total_seconds(), 3) if r.last_heartbeat
                    else None} for r in rows), key=lambda a: (a["name"], a["agent_id"]))


class Watchdog:
    def __init__(self, health: Any, inspector: Any, agent_types: Callable[[], Sequence[str]]) -> None:
        self.health = health  # chalicelib.services.health.HealthService
        self.inspector = inspector  # chalicelib.messaging.inspection.QueueInspector, or None
        self.agent_types = agent_types

    def run(self, transaction: Callable[[], AbstractContextManager[Session]], *, now: datetime, stale_seconds: int,
            user_id: uuid.UUID | None, checks: Sequence[str] = CHECKS) -> WatchReport:
        """`transaction` opens the (short) transaction that marks agents offline; the network checks run outside it."""
        report = WatchReport(checked=[c for c in CHECKS if c in checks])
        if "dependencies" in checks:
            report.dependencies = self._dependencies(report.alerts)
        if "heartbeats" in checks:
            with transaction() as session:
                report.offline = mark_stale_agents(session, now=now, stale_seconds=stale_seconds, user_id=user_id)
            if report.offline:
                names = ", ".join(a["name"] for a in report.offline[:5])
                report.alerts.append(Alert(
                    "agents_offline", "warning",
                    f"{len(report.offline)} agent(s) marked offline: no heartbeat for {stale_seconds}s ({names})",
                    {"agents": report.offline, "stale_after_seconds": stale_seconds}))
        if "dlq" in checks:
            report.queues = self._dlqs(report.alerts)
        return report

    def _dependencies(self, alerts: list[Alert]) -> dict[str, Any]:
        _, health = self.health.check(tuple(self.agent_types()))
        for name, check in health["checks"].items():
            if check["status"] == "down":
                severity = "critical" if check["required"] else "warning"
                alerts.append(Alert("dependency_down", severity, f"{name} is down ({check.get('detail', '')})",
                                    {"dependency": name, "check": check}, fingerprint=f"dependency:{name}"))
        return dict(health)

    def _dlqs(self, alerts: list[Alert]) -> list[dict[str, Any]]:
        if self.inspector is None:
            return []
        depths = [asdict(d) for d in self.inspector.depths(list(self.agent_types()))]
        for d in depths:
            if d["dlq_messages"]:
                alerts.append(Alert("dlq_not_empty", "warning",
                                    f"{d['dlq_messages']} message(s) in {d['dlq']}: tasks that could not be processed",
                                    {"agent_type": d["agent_type"], "dlq": d["dlq"], "messages": d["dlq_messages"]},
                                    fingerprint=f"dlq:{d['dlq']}"))
        return depths


def record_offline_for_owners(session: Session, offline: Sequence[dict[str, Any]], *,
                              task_id: uuid.UUID | None = None) -> None:
    """Each owner learns which of *their* agents went offline: one audit row per owner
    (`GET /audit-logs?event_type=alert`), in the transaction that marked them — it cannot get lost."""
    from chalicelib.services import audit

    by_owner: dict[str, list[dict[str, Any]]] = {}
    for agent in offline:
        by_owner.setdefault(agent["user_id"], []).append(agent)
    for owner, agents in by_owner.items():
        audit.record(session, user_id=uuid.UUID(owner), event_type=ALERT_EVENT, action="agents_offline",
                     resource_type="task" if task_id else None, resource_id=task_id,
                     details={"severity": "warning", "summary": f"{len(agents)} agent(s) marked offline",
                              "agents": agents})


def check_platform(container: Container, now: datetime | None = None) -> dict[str, Any]:
    """The scheduled check (functions/monitor.py): every agent, every check, alerts to the operators.

    The offline marks (and each owner's audit row) commit before anything is published: an alert
    SNS refuses or cannot take is reported and logged, and never undoes another user's state.
    """
    from chalicelib.db.types import utcnow

    now = now or utcnow()
    stale = container.settings.heartbeat_stale_seconds
    with container.db.transaction() as session:
        report = container.watchdog.run(lambda: nullcontext(session), now=now, stale_seconds=stale, user_id=None)
        record_offline_for_owners(session, report.offline)
    alerts = [container.alerts.publish(alert, {"scope": "platform"}) for alert in report.alerts]
    return {"checked": report.checked, "healthy": not report.alerts,
            "dependencies": (report.dependencies or {}).get("status"), "agents_marked_offline": len(report.offline),
            "alerts": alerts, "alerts_undelivered": sum(a["status"] == "error" for a in alerts)}
