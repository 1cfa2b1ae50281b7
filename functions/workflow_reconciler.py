"""Scheduled workflow reconciler (every minute): runs whose execution ended while a callback or run report
was lost are repaired from DescribeExecution / GetExecutionHistory (chalicelib/workflows/reconcile.py)."""

from __future__ import annotations

from typing import Any

from chalicelib.container import get_container
from chalicelib.observability import logger


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    report = get_container().workflow_reconciler.sweep()
    if report.repaired or report.errors:
        logger.info("workflow reconciler sweep", extra={"looked_at": report.looked_at, "repaired": report.repaired,
                                                        "errors": report.errors})
    return {"looked_at": report.looked_at, "repaired": report.repaired, "still_running": report.still_running,
            "errors": report.errors}
