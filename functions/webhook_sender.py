"""Looping webhook sender (chalicelib/webhooks/loop.py): claims due deliveries, POSTs them signed, retries.

Scheduled every minute on AWS and runs until `webhook_sender_reserve_seconds` of its invocation remain;
a NOTIFY from the notifier's sink wakes it at once, due retries are looked for every second. Each invocation
first purges a batch of finished deliveries past their retention."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from chalicelib.container import get_container
from chalicelib.observability import logger
from chalicelib.webhooks import loop


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    container = get_container()
    s = container.settings
    sender = container.webhook_sender
    purged = sender.purge(timedelta(days=s.webhook_delivery_retention_days), s.webhook_delivery_purge_batch)
    if purged:
        logger.info("webhook deliveries purged", extra={"purged": purged})
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
