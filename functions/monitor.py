"""Scheduled monitoring (every 5 minutes): dependency health, stale heartbeats (agents marked
offline) and DLQ depth over the whole platform, with alerts to the operators' SNS topic.

An alert that could not be delivered fails the invocation *after* the offline marks committed:
the function's Errors alarm pages, and no user's state is rolled back for it.
"""

from __future__ import annotations

from typing import Any

from chalicelib.container import get_container
from chalicelib.observability import logger
from chalicelib.services.watchdog import check_platform


class AlertsNotDelivered(RuntimeError):
    """The checks ran and committed; some alerts could not reach the topic (see the log)."""


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    summary = check_platform(get_container())
    if not summary["healthy"]:
        logger.warning("monitoring raised alerts", extra={"alerts": summary["alerts"]})
    if summary["alerts_undelivered"]:
        logger.error("alerts not delivered", extra={"alerts": summary["alerts"]})
        raise AlertsNotDelivered(f"{summary['alerts_undelivered']} alert(s) not delivered")
    return summary
