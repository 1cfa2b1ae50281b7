"""Answers to task tokens from the API (decisions, a cancelled run's waiting approval), through the outbox.

Each answer is an outbox row, destination "states", written in the transaction that decided it (payload
`{"action": "succeed", "token", "output"}` or `{"action": "fail", "token", "error", "cause"}`), published right
after the commit and retried by the scheduled relay when that fails: an answer is never lost to a crash.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from chalicelib.db.models import OutboxMessage
from chalicelib.db.session import Database
from chalicelib.db.types import utcnow
from chalicelib.observability import logger

if TYPE_CHECKING:
    from chalicelib.workflows.ports import TaskCallbacks

STATES = "states"
#: publish one committed "states" outbox row now (the relay retries what this does not finish). Never raises.
PublishAnswer = Callable[[uuid.UUID, dict[str, Any]], None]


def answer(session: Session, run_id: uuid.UUID, payload: dict[str, Any]) -> tuple[uuid.UUID, dict[str, Any]]:
    row = OutboxMessage(aggregate_id=run_id, destination=STATES, payload=payload)
    session.add(row)
    session.flush()
    return row.id, payload

def direct_publisher(db: Database, callbacks: Callable[[], TaskCallbacks]) -> PublishAnswer:
    """Publish a committed "states" row straight to the TaskCallbacks port and mark it published: the fast
    path while the outbox relay does not route destination "states" (once it does, `OutboxRelay.publish_one`
    is the same thing). A failure leaves the row unpublished for the relay; a late token ("late": timed out,
    no longer open) counts as published, as the contract says."""

    def publish(outbox_id: uuid.UUID, payload: dict[str, Any]) -> None:
        try:
            port = callbacks()
            if payload["action"] == "succeed":
                result = port.succeed(payload["token"], payload["output"])
            else:
                result = port.fail(payload["token"], payload["error"], payload["cause"])
        except Exception:  # noqa: BLE001 - the row stays for the relay, which retries it
            logger.warning("a task token answer could not be sent now; the relay will retry",
                           extra={"outbox_id": str(outbox_id)}, exc_info=True)
            return
        if result == "late":
            logger.info("a task token was no longer open when answered", extra={"outbox_id": str(outbox_id)})
        with db.transaction() as session:
            session.execute(update(OutboxMessage)
                            .where(OutboxMessage.id == outbox_id, OutboxMessage.published_at.is_(None))
                            .values(published_at=utcnow()).execution_options(synchronize_session=False))

    return publish
