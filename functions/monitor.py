"""Scheduled monitoring (every 5 minutes): dependency health, stale heartbeats (agents marked
offline) and DLQ depth over the whole platform, with alerts to the SNS alert topic.

The same checks a user's `monitoring` agent runs on demand over their own agents.
"""

from __future__ import annotations

from typing import Any

from chalicelib.container import get_container
from chalicelib.observability import logger
from chalicelib.services.watchdog import check_platform


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    summary = check_platform(get_container())
    if not summary["healthy"]:
        logger.warning("monitoring raised alerts", extra={"alerts": summary["alerts"]})
    return summary
