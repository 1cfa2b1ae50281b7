"""The agent consumer's workflow step records: a batch's "workflow.step" messages become tasks in one
transaction before the batch claim (chalicelib.workflows.steps), and their short-circuit answers are
published right after that commit. A record the batch could not materialise is retried alone."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chalicelib.errors import MalformedMessageError
from chalicelib.observability import logger
from chalicelib.schemas.tasks import TaskMessage
from chalicelib.services.processing import parse_message
from chalicelib.workflows.messages import TokenMessage
from chalicelib.workflows.runstate import committed_answers
from chalicelib.workflows.steps import Materialised
from chalicelib.workflows.steps import materialise as materialise_step
from chalicelib.workflows.steps import parse as parse_step

if TYPE_CHECKING:
    from chalicelib.db.session import Database


class StepBatch:
    """The batch's "workflow.step" records turned into task messages (chalicelib.workflows.steps)."""

    def __init__(self, db: Database, publish: Callable[[list[uuid.UUID]], None],
                 queue_agent_type: Callable[[str | None], str | None]) -> None:
        self.db, self.publish, self.queue_agent_type = db, publish, queue_agent_type
        #: message id -> the task message to claim (None: nothing to run)
        self.done: dict[str, TaskMessage | None] = {}
        #: message id -> step message not materialised yet (the batch transaction failed or it was malformed)
        self.pending: dict[str, TokenMessage] = {}

    def materialise(self, event: dict[str, Any]) -> None:
        for record in event.get("Records", []):
            try:
                msg = parse_step(record.get("body", ""))
            except MalformedMessageError:
                continue  # reported when its record is handled
            if msg is not None:
                self.pending[record.get("messageId", "")] = msg
        wanted = {mid: msg for mid, msg in self.pending.items() if msg is not None}
        if not wanted:
            return
        queue_type = self.queue_agent_type(event["Records"][0].get("eventSourceARN"))
        try:
            with self.db.transaction() as session:
                results = {}
                for mid, msg in wanted.items():
                    try:
                        with session.begin_nested():  # a malformed one is rolled back alone (its savepoint)
                            results[mid] = materialise_step(session, msg, queue_type)
                    except MalformedMessageError:
                        continue  # retried alone when its record is handled, and reported there
            self.publish(committed_answers(session))
        except Exception:  # noqa: BLE001 - each record then materialises in its own transaction
            logger.warning("the batch's workflow steps could not be materialised together", exc_info=True)
            return
        for mid, result in results.items():
            self.pending.pop(mid, None)
            self.done[mid] = self._task_message(result)

    def message(self, mid: str, body: str, queue_type: str | None) -> TaskMessage | None:
        """The record's task message: a plain one parsed, a step one materialised (now if not yet)."""
        if mid in self.done:
            return self.done[mid]
        msg = parse_step(body)
        if msg is None:
            return parse_message(body, queue_type)
        with self.db.transaction() as session:
            result = materialise_step(session, msg, queue_type)
        self.publish(committed_answers(session))
        return self._task_message(result)

    @staticmethod
    def _task_message(result: Materialised) -> TaskMessage | None:
        if result.task_id is None or not result.claim:
            return None
        return TaskMessage(task_id=result.task_id, agent_type=result.agent_type)
