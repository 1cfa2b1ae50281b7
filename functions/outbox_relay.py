"""Scheduled outbox relay: publishes task messages whose fast-path publish did not happen, and purges
expired idempotency keys and events past their retention (docs/events.md)."""

from __future__ import annotations

from typing import Any

from chalicelib.container import get_container
from chalicelib.observability import logger

#: the relay stops taking batches when less than this remains of its invocation.
RESERVE_MS = 10_000


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    container = get_container()
    relay = container.relay
    published = failed = parked = 0
    while True:  # drain what is due, a batch at a time; failed rows wait out their backoff, so this ends
        report = relay.run_once()
        published += report.published
        failed += report.failed
        parked += sum(report.parked.values())
        if report.taken < relay.batch_limit or context.get_remaining_time_in_millis() < RESERVE_MS:
            break
    purged = container.idempotency.purge_expired()
    events_purged = container.events.purge_expired(
        keep_going=lambda: context.get_remaining_time_in_millis() >= RESERVE_MS)
    if parked or purged or events_purged:
        logger.info("outbox relay sweep", extra={"parked": parked, "idempotency_keys_purged": purged,
                                                 "events_purged": events_purged})
    return {"published": published, "failed": failed}
