"""What /metrics and /status report: request metrics (Redis, every container),
task and agent counts (Postgres, one GROUP BY each) and queue depths (SQS).

Each source is read independently: when one is down the others are still
reported, and `ymera_scrape_error{source=...}` says which one is missing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, select

from chalicelib.config import Settings
from chalicelib.db.models import Agent, Task
from chalicelib.db.session import Database
from chalicelib.domain.agents import AgentStatus
from chalicelib.domain.tasks import TaskStatus
from chalicelib.messaging.inspection import QueueDepth, QueueInspector
from chalicelib.observability import STARTED_AT, logger, uptime_seconds
from chalicelib.schemas.monitoring import QueueDepthPublic, StatusPublic
from chalicelib.services.request_metrics import RequestMetrics


class MonitoringService:
    def __init__(self, db: Database, request_metrics: RequestMetrics | None, queues: QueueInspector | None,
                 settings: Settings, agent_types: Callable[[], Sequence[str]]) -> None:
        self.db = db
        self.request_metrics = request_metrics
        self.queues = queues
        self.settings = settings
        self.agent_types = agent_types

    # --- sources ----------------------------------------------------------------------------------------------

    def task_counts(self) -> dict[tuple[str, str], int]:
        """{(agent_type, status): n}, one GROUP BY over every task."""
        with self.db.read() as session:
            rows = session.execute(select(Task.agent_type, Task.status, func.count()).group_by(Task.agent_type,
                                                                                                Task.status))
            return {(agent_type, status): int(n) for agent_type, status, n in rows}

    def agent_counts(self, user_id: uuid.UUID | None = None) -> dict[str, int]:
        """Live (not deleted) agents by status (one user's, or everyone's); every status appears, zeros included."""
        scope = [Agent.user_id == user_id] if user_id is not None else []
        with self.db.read() as session:
            rows = session.execute(select(Agent.status, func.count()).where(Agent.deleted_at.is_(None), *scope)
                                   .group_by(Agent.status))
            counts = {str(s): 0 for s in AgentStatus}
            counts.update({status: int(n) for status, n in rows})
            return counts

    def queue_depths(self) -> list[QueueDepth]:
        return self.queues.depths(list(self.agent_types())) if self.queues is not None else []

    # --- /status ----------------------------------------------------------------------------------------------

    def status(self, user_id: uuid.UUID | None) -> StatusPublic:
        """Platform-wide (`user_id` None: admins) or one user's own agent counts, without queue depths:
        those are platform-wide, and cost one SQS call per queue."""
        platform = user_id is None
        return StatusPublic(
            version=self.settings.version, stage=self.settings.stage, scope="platform" if platform else "user",
            started_at=datetime.fromtimestamp(STARTED_AT, timezone.utc), uptime_seconds=round(uptime_seconds(), 3),
            agents=self.agent_counts(user_id),
            queues=[QueueDepthPublic(**asdict(d)) for d in self.queue_depths()] if platform else [],
            websocket_url=self.settings.websocket_url or None,
        )

    # --- /metrics ---------------------------------------------------------------------------------------------

    def prometheus(self) -> str:
        out = _Exposition()
        out.family("ymera_build_info", "gauge", "Version and stage of the API answering the scrape.")
        out.sample("ymera_build_info", {"version": self.settings.version, "stage": self.settings.stage}, 1)
        errors = {"redis": not self._requests(out), "database": not self._tasks(out),
                  "sqs": not self._queues(out)}
        out.family("ymera_scrape_error", "gauge", "1 when a source could not be read for this scrape.")
        for source, failed in errors.items():
            out.sample("ymera_scrape_error", {"source": source}, int(failed))
        return out.text()

    def _requests(self, out: _Exposition) -> bool:
        if self.request_metrics is None:
            return True  # no Redis configured: nothing to report, nothing broken
        try:
            series = self.request_metrics.snapshot()
        except Exception as exc:  # noqa: BLE001 - a missing source is reported in ymera_scrape_error
            logger.warning("request metrics unavailable", extra={"error": repr(exc)})
            return False
        out.family("ymera_http_requests_total", "counter",
                   "HTTP requests by Chalice route pattern, method and status, across all containers.")
        for s in series:
            out.sample("ymera_http_requests_total", {"route": s.route, "method": s.method, "status": s.status},
                       s.count)
        name = "ymera_http_request_duration_seconds"
        out.family(name, "histogram", "HTTP request latency in the API (seconds), across all containers.")
        for s in series:
            labels = {"route": s.route, "method": s.method, "status": s.status}
            for bound, count in s.cumulative():
                out.sample(f"{name}_bucket", {**labels, "le": repr(bound)}, count)
            out.sample(f"{name}_bucket", {**labels, "le": "+Inf"}, s.count)
            out.sample(f"{name}_sum", labels, s.sum_seconds)
            out.sample(f"{name}_count", labels, s.count)
        return True

    def _tasks(self, out: _Exposition) -> bool:
        try:
            tasks, agents = self.task_counts(), self.agent_counts()
        except Exception as exc:  # noqa: BLE001 - a missing source is reported in ymera_scrape_error
            logger.warning("task counts unavailable", extra={"error": repr(exc)})
            return False
        # Zero series for every known (type, status) so rate() and alerts see 0, not "no data".
        types = sorted(set(self.agent_types()) | {agent_type for agent_type, _ in tasks})
        out.family("ymera_tasks", "gauge", "Tasks by agent type and state.")
        for agent_type in types:
            for task_status in TaskStatus:
                out.sample("ymera_tasks", {"agent_type": agent_type, "status": str(task_status)},
                           tasks.get((agent_type, str(task_status)), 0))
        out.family("ymera_agents", "gauge", "Live agents by status.")
        for status, n in sorted(agents.items()):
            out.sample("ymera_agents", {"status": status}, n)
        return True

    def _queues(self, out: _Exposition) -> bool:
        depths = self.queue_depths()
        readable = [d for d in depths if d.error is None]
        for name, help_text, attr in (
            ("ymera_queue_messages", "Messages waiting in an agent queue (ApproximateNumberOfMessages).", "messages"),
            ("ymera_queue_messages_in_flight", "Messages received and not yet deleted.", "in_flight"),
            ("ymera_dlq_messages", "Messages in an agent queue's dead-letter queue.", "dlq_messages"),
        ):
            out.family(name, "gauge", help_text)
            for d in readable:
                queue = d.dlq if attr == "dlq_messages" else d.queue
                out.sample(name, {"agent_type": d.agent_type, "queue": queue}, getattr(d, attr))
                if attr != "dlq_messages" and d.bulk_queue is not None:  # one series per lane; the DLQ is shared
                    out.sample(name, {"agent_type": d.agent_type, "queue": d.bulk_queue}, getattr(d, f"bulk_{attr}"))
        return len(readable) == len(depths)


class _Exposition:
    """Prometheus text format 0.0.4 writer."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self._lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]

    def sample(self, name: str, labels: dict[str, str], value: float) -> None:
        self._lines.append(f"{name}{_labels(labels.items())} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return f"{{{inner}}}" if inner else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: Any) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))
