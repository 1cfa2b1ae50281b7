"""The only Logger and Metrics objects. Tracer is not built here: the X-Ray SDK costs ~200 ms of cold start.

Context keys (request_id, user_id, task_id) are thread-local (a ContextVar in
powertools), so the threaded local server and in-process consumers never mix
one request's keys into another's log lines.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger

if TYPE_CHECKING:
    from aws_lambda_powertools import Metrics

logger = Logger(service="ymera")

#: Container start (module import = cold start); /status reports uptime from it.
STARTED_AT = time.time()
_STARTED_MONOTONIC = time.monotonic()

METRICS_NAMESPACE = "YMERA"


def uptime_seconds() -> float:
    return time.monotonic() - _STARTED_MONOTONIC


@contextmanager
def log_context(**keys: str | None) -> Iterator[None]:
    """Add keys to every log line of this thread for the duration of the block."""
    present = {k: v for k, v in keys.items() if v is not None}
    logger.thread_safe_append_keys(**present)
    try:
        yield
    finally:
        logger.thread_safe_remove_keys(present)


@lru_cache(maxsize=1)
def metrics() -> Metrics:
    """CloudWatch EMF metrics, built on first use (the API never needs them)."""
    from aws_lambda_powertools import Metrics

    return Metrics(namespace=METRICS_NAMESPACE, service="ymera")


def publish_task_outcomes(outcomes: Iterable[tuple[str, str, float]]) -> None:
    """Emit TaskCompleted / TaskFailed / TaskDurationMs per agent_type: one EMF line per type.

    `outcomes` are (agent_type, status, duration_ms) of tasks whose results were committed.
    """
    from aws_lambda_powertools.metrics import MetricUnit

    by_type: dict[str, list[tuple[str, float]]] = {}
    for agent_type, status, duration_ms in outcomes:
        by_type.setdefault(agent_type, []).append((status, duration_ms))
    m = metrics()
    for agent_type, rows in by_type.items():
        m.add_dimension(name="agent_type", value=agent_type)
        for name, wanted in (("TaskCompleted", "completed"), ("TaskFailed", "failed")):
            m.add_metric(name=name, unit=MetricUnit.Count, value=sum(1 for status, _ in rows if status == wanted))
        for _, duration_ms in rows:
            m.add_metric(name="TaskDurationMs", unit=MetricUnit.Milliseconds, value=duration_ms)
        m.flush_metrics()  # also clears dimensions, so the next type gets its own line
