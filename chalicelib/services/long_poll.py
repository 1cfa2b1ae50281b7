"""GET /tasks/{id}?wait=N and GET /runs/{id}?wait=N: answer when the resource is done, or after N seconds
with its state then (docs/events.md, "Long-poll"). No database connection is held while waiting: every read is
a short statement of its own, and between reads the request only listens on the user's Redis channel
(chalicelib.events.live).

A task's reads while it waits are `TaskService.record` (the task and its result, one owner-filtered statement
of its own, no session, no cache): the read that finds it finished is the answer, the same JSON as
GET /tasks/{id}; an unknown task (or another user's) is a 404 at once; at the deadline, the task as it is then."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chalicelib.domain.tasks import TERMINAL
from chalicelib.errors import NotFoundError
from chalicelib.events.ledger import RUN_APPROVAL_REQUESTED, RUN_STATUS_CHANGED
from chalicelib.events.live import Waiter
from chalicelib.workflows.runstate import RUN_TERMINAL

if TYPE_CHECKING:
    from chalicelib.schemas.tasks import TaskPublic
    from chalicelib.schemas.workflows import RunPublic
    from chalicelib.services.runs import RunService
    from chalicelib.services.tasks import TaskService

#: the most a caller may wait (API Gateway answers 504 after 29 s; the API function's timeout is 30 s).
MAX_WAIT_SECONDS = 20
#: a run is worth answering for when it ended, or when it waits for someone's approval.
RUN_DONE = frozenset({*RUN_TERMINAL, "waiting_approval"})


class LongPoll:
    def __init__(self, waiter: Waiter, tasks: Callable[[], TaskService], runs: Callable[[], RunService]) -> None:
        self.waiter = waiter
        self._tasks = tasks
        self._runs = runs

    def task(self, user_id: uuid.UUID, task_id: uuid.UUID, seconds: float) -> TaskPublic:
        tasks = self._tasks()

        def wakes(event: dict[str, Any]) -> bool:
            return _resource_id(event) == str(task_id)

        # Every read is the ordinary read's own statement (TaskService.record: the task and its result, one
        # statement, no cache), so the read that finds the task finished is the answer: the same JSON as
        # GET /tasks/{id}, without a second read through the cache (a miss there is three Redis round trips).
        # None (unknown, or not the caller's) is a 404 at once; at the deadline, the task as it is then.
        record = self.waiter.wait(user_id, lambda: tasks.record(user_id, task_id),
                                  lambda r: r is None or r.status in TERMINAL, wakes, seconds)
        if record is None:
            raise NotFoundError("task not found", {"task_id": str(task_id)})
        return record.public()

    def run(self, user_id: uuid.UUID, run_id: uuid.UUID, seconds: float) -> RunPublic:
        runs = self._runs()

        def wakes(event: dict[str, Any]) -> bool:
            return event.get("run_id") == str(run_id) and event.get("type") in (RUN_STATUS_CHANGED,
                                                                                RUN_APPROVAL_REQUESTED)

        return self.waiter.wait(user_id, lambda: runs.get(user_id, run_id), lambda r: r.status in RUN_DONE,
                                wakes, seconds)


def _resource_id(event: dict[str, Any]) -> Any:
    resource = event.get("resource")
    return resource.get("id") if isinstance(resource, dict) else None
