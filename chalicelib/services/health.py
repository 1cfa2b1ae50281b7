"""Liveness (no I/O) and readiness: a timed check of each dependency.

The database is required (503 without it). Redis and the queues degrade the
service but lose nothing: tasks wait in the outbox until SQS is back.

Readiness costs a database round trip, a Redis PING and one SQS call per agent
queue, and `GET /health/ready` needs no auth: each container answers it from
the last check for `readiness_cache_seconds`, and concurrent requests share one
check, so no client can turn it into load on the dependencies.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import text

from chalicelib.config import Settings
from chalicelib.db.session import Database
from chalicelib.domain import lanes
from chalicelib.messaging.sqs import SqsPublisher


class HealthService:
    def __init__(self, db: Database, redis_factory: Callable[[], Any], publisher: Any, settings: Settings,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.redis_factory = redis_factory
        self.publisher = publisher
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._ready: tuple[float, tuple[str, ...], tuple[bool, dict[str, Any]]] | None = None

    def live(self) -> dict[str, Any]:
        """The process answers: no I/O, nothing a dependency outage can slow down."""
        return {"status": "ok", "version": self.settings.version, "stage": self.settings.stage}

    def ready(self, queue_types: tuple[str, ...]) -> tuple[bool, dict[str, Any]]:
        """`check`, answered from this container's last result while it is younger than the cache setting."""
        ttl = self.settings.readiness_cache_seconds
        with self._lock:  # one check at a time; the others wait for it and take its answer
            cached = self._ready
            now = self._clock()
            if cached is not None and cached[1] == queue_types and now - cached[0] < ttl:
                healthy, report = cached[2]
                return healthy, {**report, "age_seconds": round(now - cached[0], 3)}
            healthy, report = self.check(queue_types)
            self._ready = (self._clock(), queue_types, (healthy, report))
            return healthy, {**report, "age_seconds": 0.0}

    def check(self, queue_types: tuple[str, ...]) -> tuple[bool, dict[str, Any]]:
        checks = {
            "database": _timed(self._database, required=True),
            "redis": _timed(self._redis, required=False),
            "queues": _timed(lambda: self._queues(queue_types), required=False),
        }
        healthy = all(c["status"] == "ok" for c in checks.values() if c["required"])
        degraded = any(c["status"] != "ok" for c in checks.values())
        status = "unhealthy" if not healthy else "degraded" if degraded else "ok"
        return healthy, {"status": status, "version": self.settings.version, "stage": self.settings.stage,
                         "checks": checks}

    def _database(self) -> None:
        with self.db.read() as session:
            session.execute(text("SELECT 1"))

    def _redis(self) -> str | None:
        client = self.redis_factory()
        if client is None:
            return "not configured"
        client.ping()
        return None

    def _queues(self, queue_types: tuple[str, ...]) -> None:
        if not isinstance(self.publisher, SqsPublisher):
            return
        for agent_type in queue_types:  # both lanes: a task may be published to either (docs/scheduling.md)
            for destination in (agent_type, lanes.destination(agent_type, lanes.Lane.BULK)):
                url = self.publisher.queue_url(destination)
                self.publisher.client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])


def _timed(check: Callable[[], str | None], *, required: bool) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        note = check()
        result: dict[str, Any] = {"status": "ok"} if note is None else {"status": "skipped", "detail": note}
    except Exception as exc:  # noqa: BLE001 - a failing dependency is the answer, not an error
        result = {"status": "down", "detail": type(exc).__name__}
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    result["required"] = required
    return result
