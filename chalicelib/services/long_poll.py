"""GET /tasks/{id}?wait=N and GET /runs/{id}?wait=N: answer when the resource is done, or after N seconds
with its state then (docs/events.md, "Long-poll"). No database connection is held while waiting: every read is
a short statement of its own, and between reads the request only listens on the user's Redis channel
(chalicelib.events.live).

A task's re-reads while it waits are status probes (one owner-filtered SELECT of its status, no session, no
cache); the answer is the route's ordinary read (`TaskService.get`: the same JSON as GET /tasks/{id}, a
finished task from the cache), read once, when the probe says it finished, the task is unknown (404), or the
time is up."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from chalicelib.db.models import Task
from chalicelib.domain.tasks import TERMINAL
from chalicelib.events.ledger import RUN_APPROVAL_REQUESTED, RUN_STATUS_CHANGED
from chalicelib.events.live import Waiter
from chalicelib.workflows.runstate import RUN_TERMINAL

if TYPE_CHECKING:
    from chalicelib.db.session import Database
    from chalicelib.schemas.tasks import TaskPublic
    from chalicelib.schemas.workflows import RunPublic
    from chalicelib.services.runs import RunService
    from chalicelib.services.tasks import TaskService

#: the most a caller may wait (API Gateway answers 504 after 29 s; the API function's timeout is 30 s).
MAX_WAIT_SECONDS = 20
#: a run is worth answering for when it ended, or when it waits for someone's approval.
RUN_DONE = frozenset({*RUN_TERMINAL, "waiting_approval"})


class LongPoll:
    def __init__(self, waiter: Waiter, tasks: Callable[[], TaskService], runs: Callable[[], RunService],
                 db: Database) -> None:
        self.waiter = waiter
        self._tasks = tasks
        self._runs = runs
        #: for the task status probes.
        self.db = db

    def task(self, user_id: uuid.UUID, task_id: uuid.UUID, seconds: float) -> TaskPublic:
        tasks = self._tasks()

        def wakes(event: dict[str, Any]) -> bool:
            return _resource_id(event) == str(task_id)

        # Probe until it finished (None: unknown, or not the caller's), then answer with the ordinary read; it
        # is 404 for None, and at the deadline the task as it is then. A wake-up that says the task finished (the
        # consumer's hint, the notifier's event) goes straight to the ordinary read, which has the last word.
        heard: list[str | None] = [None]

        def woken(event: dict[str, Any]) -> bool:
            if not wakes(event):
                return False
            status = event.get("status")
            heard[0] = status if isinstance(status, str) and status in TERMINAL else None
            return True

        def probe() -> str | None:
            if heard[0] is not None:
                status, heard[0] = heard[0], None
                return status
            return self.task_status(user_id, task_id)

        deadline = self.waiter.clock() + seconds
        while True:
            self.waiter.wait(user_id, probe, lambda status: status is None or status in TERMINAL, woken,
                             max(0.0, deadline - self.waiter.clock()))
            task = tasks.get(user_id, task_id)
            if task.status in TERMINAL or self.waiter.clock() >= deadline:
                return task
            # a wake-up the ordinary read does not bear out: wait on

    def task_status(self, user_id: uuid.UUID, task_id: uuid.UUID) -> str | None:
        """The caller's task's status, or None: one statement, its own transaction (no BEGIN/ROLLBACK)."""
        with self.db.statement() as conn:
            status = conn.scalar(select(Task.status).where(Task.id == task_id, Task.user_id == user_id))
        return None if status is None else str(status)

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
