"""Scheduled task reaper (every minute): dead-lettered task messages fail their tasks with DELIVERY_FAILED
(the messages stay in the DLQs), then managed tasks stuck `processing` end `timed_out` and tasks never
delivered end `failed` (chalicelib/services/reaper.py; docs/consumers.md "Nothing stuck")."""

from __future__ import annotations

from typing import Any

from chalicelib.container import get_container
from chalicelib.observability import logger

#: passes per invocation at most (each handles up to the reaper's batch per rule).
MAX_PASSES = 20


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    container = get_container()
    totals = {"dead_lettered": container.dead_letter_sweep.sweep(), "timed_out": 0, "failed": 0}
    reaper = container.task_reaper
    for _ in range(MAX_PASSES):  # drain what is overdue, a batch at a time
        report = reaper.reap()
        totals["timed_out"] += report.timed_out
        totals["failed"] += report.failed
        if report.timed_out + report.failed < reaper.batch:
            break
    return totals
