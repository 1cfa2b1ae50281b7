"""Scheduled outbox relay: publishes task messages whose fast-path publish did not happen."""

from __future__ import annotations

from typing import Any

from chalicelib.container import get_container
from chalicelib.observability import logger


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    relay = get_container().relay
    published = failed = 0
    while True:  # drain what is waiting, a batch at a time
        report = relay.run_once()
        published += report.published
        failed += report.failed
        if report.published + report.failed < relay.batch_limit or report.failed:
            break
    return {"published": published, "failed": failed}
