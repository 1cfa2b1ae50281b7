"""Scheduled lease reaper: tasks whose external worker stopped heartbeating go back to the queue
(or fail with LEASE_EXPIRED once their attempts are used up). Lease calls also reap, opportunistically."""

from __future__ import annotations

from typing import Any

from chalicelib.container import get_container
from chalicelib.observability import logger


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    leases = get_container().leases
    totals = {"requeued": 0, "failed": 0, "cancelled": 0}
    while True:  # drain what expired, a batch at a time
        report = leases.reap()
        totals["requeued"] += report.requeued
        totals["failed"] += report.failed
        totals["cancelled"] += report.cancelled
        if report.requeued + report.failed + report.cancelled < leases.reap_batch:
            break
    return totals
