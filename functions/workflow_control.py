"""Workflow control queue consumer (`<prefix>-workflow-control`): what state machines send besides agent
steps — approval gates, for_each fan-outs, engine steps, and run reports (finished / failed).

chalicelib/workflows/control.py does the work; docs/workflows-runtime.md. Partial batch failures: a record
that raised (database down, Step Functions unreachable before the answer was written) is retried by SQS
and lands in the queue's DLQ after maxReceiveCount; a malformed one is logged and retried into the DLQ too.
Answers are outbox rows committed before anything is sent, so a retried record never loses one.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from chalicelib.container import get_container
from chalicelib.errors import MalformedMessageError
from chalicelib.observability import log_context, logger


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    control = get_container().workflow_control
    processor = BatchProcessor(event_type=EventType.SQS)

    def record_handler(record: SQSRecord) -> str:
        with log_context(message_id=record.message_id):
            try:
                outcome = control.handle(record.body)
            except MalformedMessageError as exc:
                logger.error("malformed workflow control message", extra={"reason": exc.message,
                                                                         "details": exc.details})
                raise
            logger.info("workflow control message handled", extra={"outcome": outcome})
            return outcome

    return dict(process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                         context=context))
