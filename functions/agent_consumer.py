"""Per-agent-type SQS consumer. One module serves every agent queue: the agent
type comes from the queue (eventSourceARN) and must match the message.

Returns partial batch failures (ReportBatchItemFailures): only records that
failed are retried; after maxReceiveCount they land in the queue's DLQ. One
statement claims the whole batch, then each record runs (no transaction
open while its agent runs; chalicelib.services.processing). A fast plain task's
outcome waits (at most `consumer_group_window_seconds`, plus the record then
running) and is written with the others of its owner and agent type in one
statement, its own transaction; any other outcome, and any a grouped statement
could not write, commits on its own. The batch's critical and high tasks run
first (the claim returned each task's priority), the rest in arrival order.
Each record's answer (its status, or the failure that reports it) is then given
to the batch processor. A record is started
only while the invocation has time for it: the rest are given back and reported as
failures without running, and SQS delivers them again.

A record may also be a workflow step ("workflow.step", sent by Step Functions with a task token): it is
turned into a task first (chalicelib.workflows.steps), then claimed and run like any task; a step answered
at once (run cancelled, already succeeded, skipped) or run by an external agent runs nothing here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from chalicelib.container import get_container
from chalicelib.domain import lanes
from chalicelib.errors import MalformedMessageError, RetryLaterError
from chalicelib.observability import log_context, logger, publish_task_outcomes
from chalicelib.schemas.tasks import TaskMessage
from chalicelib.services.processing import OutcomeGroups, RecordBudget, RecordDeferredError, parse_message
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
    processor = BatchProcessor(event_type=EventType.SQS)
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
    # One commit claims the whole batch; each record then runs, and its outcome commits alone or with its group.
    messages = _messages(event, steps)
    try:
        claims = container.processor.claim_batch(list(messages.values()), budget.lease_until())
    except Exception:  # noqa: BLE001 - each record then claims on its own, and a failed one returns after a short delay
        logger.warning("the batch claim failed; records claim one by one", exc_info=True)
        claims = {}

    def run_record(record: SQSRecord) -> str | None:
        """Run one record; None when its outcome was deferred into `groups` (its record's answer comes with the
        grouped write). Raises what reports the record as a batch item failure, after setting when it returns."""
        # Every log line of this record (processor and agent included) carries its ids.
        with log_context(message_id=record.message_id):
            try:
                budget.check()
                message = steps.message(record.message_id, record.body, queue_agent_type(record.event_source_arn))
                if message is None:  # a step answered at once, or an external agent's task (it leases it)
                    return "acknowledged"
                receive_count = int(record.attributes.approximate_receive_count or 1)
                with log_context(task_id=str(message.task_id)):
                    started = time.perf_counter()
                    try:
                        outcome = container.processor.process(
                            message, receive_count, lease_until=budget.lease_until(),
                            claimed=claims.pop(message.task_id, None), groups=groups)
                    finally:
                        budget.spent(time.perf_counter() - started)
                    elapsed_ms = (time.perf_counter() - started) * 1000
                    if outcome.deferred:
                        deferred[message.task_id] = (record, message.agent_type, elapsed_ms)
                        return None
                    if outcome.status != "skipped":
                        finished.append((message.agent_type, outcome.status, elapsed_ms))
                    return outcome.status
            except RetryLaterError as exc:  # a retryable agent failure: exponential backoff with jitter
                come_back(record, exc.delay_seconds)
                raise
            except RecordDeferredError as exc:
                logger.info("record deferred: not enough time left in this invocation", extra={"reason": str(exc)})
                come_back(record, infra_delay)
                raise
            except MalformedMessageError as exc:
                # Reported as a failure: retried, then kept in the DLQ. The reason is logged here.
                logger.error("malformed task message", extra={"reason": exc.message, "details": exc.details})
                raise
            except Exception:
                # An infrastructure failure (database unreachable, commit failed): back soon, not in minutes.
                logger.warning("record failed; retrying shortly", exc_info=True)
                come_back(record, infra_delay)
                raise

    def scope_of(record: SQSRecord, task_id: Any) -> Any:
        return log_context(message_id=record.message_id, task_id=str(task_id))

    def write_groups() -> None:
        """The deferred outcomes, a statement per owner group; each record's answer is its task's."""
        def scope(task_id: Any) -> Any:
            return scope_of(deferred[task_id][0], task_id)

        for task_id, done in container.processor.write_deferred(groups, scope).items():
            record, agent_type, elapsed_ms = deferred.pop(task_id)
            if isinstance(done, RetryLaterError):  # its claim still held: back once the lease lapsed
                come_back(record, done.delay_seconds)
                answers[id(record.raw_event)] = done
            elif isinstance(done, Exception):
                with scope_of(record, task_id):
                    logger.warning("record failed; retrying shortly", exc_info=done)
                come_back(record, infra_delay)
                answers[id(record.raw_event)] = done
            else:
                finished.append((agent_type, done.status, elapsed_ms))
                answers[id(record.raw_event)] = done.status

    #: Fast plain runs' outcomes wait here and are written a statement per (owner, agent type): fewer round
    #: trips and commits per task (docs/consumers.md, "Cost per task"). Every record runs first, in order; the
    #: batch processor then reports each record's answer (a status, or the exception that makes it a failure).
    groups = OutcomeGroups(container.settings.consumer_group_window_seconds)
    deferred: dict[Any, tuple[SQSRecord, str, float]] = {}
    #: each record's answer, by its record (the event's own dict: the batch processor's SQSRecord wraps it).
    answers: dict[int, str | Exception] = {}

    def record_handler(record: SQSRecord) -> str:
        answer = answers.pop(id(record.raw_event))
        if isinstance(answer, Exception):
            raise answer
        return answer

    try:
        try:
            for raw in _urgent_first(event.get("Records", []), claims, messages):
                if groups.due():
                    write_groups()
                record = SQSRecord(raw)
                try:
                    status = run_record(record)
                except Exception as exc:  # noqa: BLE001 - the record's answer: reported by the batch processor
                    answers[id(raw)] = exc
                    continue
                if status is not None:
                    answers[id(raw)] = status
        finally:
            write_groups()  # what ran is written even when the loop ends early (a BaseException)
        response = process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                            context=context)
    finally:
        try:
            _release_unstarted(container.processor, claims, event, messages, come_back)
            publish_task_outcomes(finished)  # what committed is published even when the whole batch is retried
        finally:
            container.processor.flush()  # the wake-up hints queued after each commit are all sent
    return dict(response)


def _release_unstarted(processor: Any, claims: dict[Any, Any], event: dict[str, Any],
                       messages: dict[str, TaskMessage], come_back: Callable[[SQSRecord, int], None]) -> None:
    """Give back the claims that were never run (deferred records). If that fails, their tasks stay held until
    the lease lapses, and a record back sooner would be acknowledged as a duplicate: each returns after it."""
    try:
        processor.release_unstarted(list(claims.values()))
    except Exception:
        for raw in event.get("Records", []):
            message = messages.get(raw.get("messageId", ""))
            claim = claims.get(message.task_id) if message is not None else None
            if claim is not None:
                come_back(SQSRecord(raw), processor.lapse_seconds(claim))
        raise


def _urgent_first(records: list[dict[str, Any]], claims: dict[Any, Any], messages: dict[str, TaskMessage]
                  ) -> list[dict[str, Any]]:
    """The batch's records, those whose claimed task is critical or high first (in arrival order each): an urgent
    task batched behind low ones is not finished after them. The others keep their order."""
    urgent = {task_id for task_id, claim in claims.items() if claim.task.priority in lanes.URGENT}
    if not urgent:
        return records

    def is_urgent(record: dict[str, Any]) -> bool:
        message = messages.get(record.get("messageId", ""))
        return message is not None and message.task_id in urgent

    return sorted(records, key=lambda record: not is_urgent(record))  # stable: arrival order within each


def _messages(event: dict[str, Any], steps: StepBatch) -> dict[str, TaskMessage]:
    """The batch's well-formed messages by message id; a malformed one is reported when its record is handled."""
    out: dict[str, TaskMessage] = {}
    for record in event.get("Records", []):
        mid = record.get("messageId", "")
        if mid in steps.done:
            message = steps.done[mid]
            if message is not None:
                out[mid] = message
            continue
        if mid in steps.pending:
            continue  # its own transaction, when its record is handled
        try:
            out[mid] = parse_message(record.get("body", ""), queue_agent_type(record.get("eventSourceARN")))
        except MalformedMessageError:
            continue
    return out
