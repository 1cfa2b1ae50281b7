"""GET /events (docs/events.md): the caller's event ledger, a page at a time after a cursor."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import Field

from chalicelib.schemas.common import PublicModel, StrictModel

#: Postgres bigint: a larger `after` could never match, and would not fit the query's parameter.
MAX_EVENT_ID = 2**63 - 1
EVENTS_PAGE_DEFAULT = 100
EVENTS_PAGE_MAX = 500


class EventListQuery(StrictModel):
    after: int = Field(default=0, ge=0, le=MAX_EVENT_ID,
                       description="Return events with ids above this one (the last `event_id` you saw; 0 = all).")
    limit: int = Field(default=EVENTS_PAGE_DEFAULT, ge=1, le=EVENTS_PAGE_MAX)


class EventResource(PublicModel):
    type: str = Field(description="task | run | step | webhook (a step's id is its run's id; step_id names it)")
    id: uuid.UUID


class EventPublic(PublicModel):
    """One event, as every channel carries it (GET /events, WebSocket messages, webhook bodies)."""

    event_id: int = Field(description="Monotonic and gap-free per user: deduplicate and resume by it.")
    type: str = Field(description="task.status_changed | run.status_changed | run.step_changed | "
                                  "run.approval_requested | webhook.disabled")
    resource: EventResource
    run_id: uuid.UUID | None
    step_id: str | None
    status: str
    occurred_at: datetime
    payload: dict[str, Any]


class EventPage(PublicModel):
    items: list[EventPublic]
    next_after: int = Field(description="Pass as `after` for the next page: the last item's id, or your `after` "
                                        "when the page is empty.")
    has_more: bool = Field(description="More events are stored after this page (fetch again at once).")


class WaitQuery(StrictModel):
    """GET /tasks/{task_id} and GET /runs/{run_id}: `wait` turns the read into a long-poll."""

    wait: float | None = Field(default=None, gt=0, le=20, description=(
        "Seconds (at most 20) to wait for the resource to finish — a task reaching completed, failed, cancelled "
        "or timed_out; a run ending or waiting for approval — before answering. Without it the answer is "
        "immediate; after `wait` seconds it is the resource as it is then."))
