"""Ingress queue consumer (`<prefix>-ingress`): event producers' signed task messages -> tasks.

docs/producers.md. Per record (chalicelib.services.ingress): created or duplicate -> success (SQS
deletes it); rejected (unsigned, bad signature, revoked or unknown key, oversized, not JSON,
unknown schema_version, invalid, another user's agent...) -> copied to the ingress DLQ with a
`ymera-reject-reason` attribute, then success, so it is never retried; over the owner's rate limit
-> its visibility is set to the bucket's retry-after and it is reported failed (delayed, not
dropped). Anything else (database down) raises and SQS retries it.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from chalicelib.container import get_container
from chalicelib.observability import log_context, logger
from chalicelib.services.ingress import Rejected, Throttled


class DelayedError(Exception):
    """Over the owner's rate limit: reported as a batch item failure after its visibility was set."""


def _attributes(record: SQSRecord) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, attr in (record.raw_event.get("messageAttributes") or {}).items():
        value = attr.get("stringValue") if isinstance(attr, dict) else None
        if isinstance(name, str) and isinstance(value, str):
            out[name] = value
    return out


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    container = get_container()
    # A batch whose every record was delayed is a normal answer here, not an error to raise.
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)

    def record_handler(record: SQSRecord) -> str:
        with log_context(message_id=record.message_id):
            body = record.raw_event.get("body")
            body = body if isinstance(body, str) else ""
            attributes = _attributes(record)
            outcome = container.ingress.handle(body, attributes, record.message_id)
            if isinstance(outcome, Rejected):
                container.ingress_queues.reject(record.event_source_arn, body, attributes, outcome.reason)
                return "rejected"
            if isinstance(outcome, Throttled):
                container.ingress_queues.delay(record.event_source_arn, record.receipt_handle, outcome.retry_after)
                logger.info("ingress message delayed: owner over its rate limit",
                            extra={"retry_after": outcome.retry_after})
                raise DelayedError(f"retry in {outcome.retry_after}s")
            return "duplicate" if outcome.duplicate else "created"

    return dict(process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                         context=context))
