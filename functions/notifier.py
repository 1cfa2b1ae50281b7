"""The looping notifier (chalicelib.events.notifier): ledger events -> WebSocket connections, webhooks,
and the Redis channels long-polls wait on. Scheduled every minute; each run loops ~60 s."""

from __future__ import annotations

from typing import Any

from chalicelib.container import get_container
from chalicelib.observability import logger


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    report = get_container().notifier().run(context)
    if report.events or report.lost_cas:
        logger.info("notifier run", extra={"rounds": report.rounds, "events": report.events, "users": report.users,
                                           "lost_cas": report.lost_cas, "notifies": report.notifies})
    return {"rounds": report.rounds, "events": report.events, "lost_cas": report.lost_cas}
