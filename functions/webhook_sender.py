"""Looping webhook sender (chalicelib/webhooks/loop.py): claims due deliveries, POSTs them signed, retries.

Scheduled every minute on AWS and runs until `webhook_sender_reserve_seconds` of its invocation remain;
a NOTIFY from the notifier's sink wakes it at once, due retries are looked for every second."""

from __future__ import annotations

from typing import Any

from chalicelib.container import get_container
from chalicelib.observability import logger
from chalicelib.webhooks import loop


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    container = get_container()
    s = container.settings
    sender = container.webhook_sender
    listener = loop.listener_for(sender, s.notifier_listen_url)
    try:
        report = loop.run(sender, lambda: context.get_remaining_time_in_millis() / 1000,
                          reserve_seconds=s.webhook_sender_reserve_seconds, poll_seconds=s.webhook_sender_poll_seconds,
                          listener=listener)
    finally:
        if listener is not None:
            listener.close()
    if report.taken:
        logger.info("webhook sender round", extra={"taken": report.taken, "succeeded": report.succeeded,
                                                   "retrying": report.retrying, "failed": report.failed,
                                                   "disabled": len(report.disabled)})
    return {"taken": report.taken, "succeeded": report.succeeded, "retrying": report.retrying,
            "failed": report.failed}
