"""Per-agent-type SQS consumer. One module serves every agent queue: the agent
type comes from the queue (eventSourceARN) and must match the message.

Returns partial batch failures (ReportBatchItemFailures): only records that
raised are retried; after maxReceiveCount they land in the queue's DLQ. Each
record runs and commits on its own (chalicelib.services.processing) after one
transaction claimed the whole batch, and a record is started only while the
invocation has time for it: the rest are given back and reported as failures
without running, and SQS delivers them again.

A record may also be a workflow step ("workflow.step", sent by Step Functions with a task token): it is
turned into a task first (chalicelib.workflows.steps), then claimed and run like any task; a step answered
at once (run cancelled, already succeeded, skipped) or run by an external agent runs nothing here.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aws_lambda_powertools.utilities.batch import AsyncBatchProcessor, EventType, async_process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from chalicelib.container import get_container
from chalicelib.domain import lanes
from chalicelib.errors import MalformedMessageError, RetryLaterError
from chalicelib.observability import log_context, logger, publish_task_outcomes
from chalicelib.schemas.tasks import TaskMessage
from chalicelib.services.processing import Outcome, Ran, RecordBudget, RecordDeferredError, parse_message
from chalicelib.workflows.batch import StepBatch

QUEUE_MARKER = "-agent-"


def queue_agent_type(event_source_arn: str | None) -> str | None:
    """`arn:aws:sqs:region:acct:ymera-dev-agent-validation` -> "validation"; its bulk lane
    `...-agent-validation-bulk` -> "validation" too (docs/scheduling.md)."""
    if not event_source_arn:
        return None
    name = event_source_arn.rsplit(":", 1)[-1]
    _, sep, tail = name.rpartition(QUEUE_MARKER)
    return lanes.agent_type_of(tail) if sep else None


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    container = get_container()
    processor = AsyncBatchProcessor(event_type=EventType.SQS)
    queue, infra_delay = container.visibility, container.settings.infra_retry_seconds

    def come_back(record: SQSRecord, seconds: int) -> None:
        """A failed record returns after `seconds`, not after the queue's visibility timeout (6-30 min)."""
        if record.event_source_arn and record.receipt_handle:
            queue.delay(record.event_source_arn, record.receipt_handle, seconds)

    budget = RecordBudget(context.get_remaining_time_in_millis, container.settings.consumer_record_reserve_seconds)

    #: (agent_type, status, duration_ms) per finished task; published once, after the batch.
    finished: list[tuple[str, str, float]] = []
    # Workflow step messages become tasks first (one transaction for the batch's steps); their tokens'
    # answers (short-circuits) are published right after that commit.
    steps = StepBatch(container.db, container.relay.publish_many, queue_agent_type)
    steps.materialise(event)
    # One commit claims the whole batch (what batching still saves); each record then runs and commits alone.
    try:
        claims = container.processor.claim_batch(_messages(event, steps), budget.lease_until())
    except Exception:  # noqa: BLE001 - each record then claims on its own, and a failed one returns after a short delay
        logger.warning("the batch claim failed; records claim one by one", exc_info=True)
        claims = {}

    def run(record: SQSRecord) -> str | Outcome | Ran:
        """A record up to its store, on this thread: claim unless the batch claimed it, run the agent."""
        budget.check()
        message = steps.message(record.message_id, record.body, queue_agent_type(record.event_source_arn))
        if message is None:  # a step answered at once, or an external agent's task (it leases it)
            return "acknowledged"
        receive_count = int(record.attributes.approximate_receive_count or 1)
        with log_context(task_id=str(message.task_id)):
            return container.processor.run(message, receive_count, lease_until=budget.lease_until(),
                                           claimed=claims.pop(message.task_id, None))

    def store(record: SQSRecord, ran: Ran) -> tuple[Outcome, float]:
        """The record's outcome stored (its own commit), and how long that took."""
        started = time.perf_counter()
        with log_context(message_id=record.message_id, task_id=str(ran.claim.task.id)):
            return container.processor.finish(ran), time.perf_counter() - started

    async def record_handler(record: SQSRecord) -> str:
        """One record. A plain task's outcome is stored on the processor's outcome thread: this coroutine
        waits for its commit (its record succeeds or fails with it) while the batch's next record runs."""
        started = time.perf_counter()
        try:
            # Every log line of this record (processor and agent included) carries its ids. The keys are per
            # thread: none is held across the `await` (the next records run on this thread meanwhile).
            with log_context(message_id=record.message_id):
                try:
                    ran = run(record)
                finally:
                    ran_for = time.perf_counter() - started  # this record's own time, not its neighbours'
                    budget.spent(ran_for)
            if isinstance(ran, str):
                return ran
            if isinstance(ran, Outcome):  # nothing to store: a duplicate (skipped), or waiting on subtasks
                if ran.status != "skipped":
                    finished.append((ran.agent_type or "", ran.status, ran_for * 1000))
                return ran.status
            writer = container.processor.outcome_thread
            if writer is not None and ran.pipelined:
                outcome, stored_for = await asyncio.get_running_loop().run_in_executor(writer, store, record, ran)
            else:
                outcome, stored_for = store(record, ran)
            budget.spent(ran_for + stored_for)
            finished.append((outcome.agent_type or "", outcome.status, (ran_for + stored_for) * 1000))
            return outcome.status
        except Exception as exc:
            with log_context(message_id=record.message_id):
                failed(record, exc)
            raise

    def failed(record: SQSRecord, exc: Exception) -> None:
        """How a failed record comes back (ChangeMessageVisibility), and its log line."""
        if isinstance(exc, RetryLaterError):  # a retryable agent failure: exponential backoff with jitter
            come_back(record, exc.delay_seconds)
        elif isinstance(exc, RecordDeferredError):
            logger.info("record deferred: not enough time left in this invocation", extra={"reason": str(exc)})
            come_back(record, infra_delay)
        elif isinstance(exc, MalformedMessageError):
            # Reported as a failure: retried, then kept in the DLQ. The reason is logged here.
            logger.error("malformed task message", extra={"reason": exc.message, "details": exc.details})
        else:
            # An infrastructure failure (database unreachable, commit failed): back soon, not in minutes.
            logger.warning("record failed; retrying shortly", exc_info=exc)
            come_back(record, infra_delay)

    try:
        response = async_process_partial_response(event=event, record_handler=record_handler,
                                                  processor=processor, context=context)
    finally:
        try:
            container.processor.release_unstarted(list(claims.values()))  # claimed, then deferred: not run
            publish_task_outcomes(finished)  # what committed is published even when the whole batch is retried
        finally:
            container.processor.flush()  # the wake-up hints queued after each commit are all sent
    return dict(response)


def _messages(event: dict[str, Any], steps: StepBatch) -> list[TaskMessage]:
    """The batch's well-formed messages; a malformed one is reported when its record is handled."""
    out = []
    for record in event.get("Records", []):
        mid = record.get("messageId", "")
        if mid in steps.done:
            message = steps.done[mid]
            if message is not None:
                out.append(message)
            continue
        if mid in steps.pending:
            continue  # its own transaction, when its record is handled
        try:
            out.append(parse_message(record.get("body", ""), queue_agent_type(record.get("eventSourceARN"))))
        except MalformedMessageError:
            continue
    return out
