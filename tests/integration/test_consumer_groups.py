"""The consumer's grouped outcome writes: a batch's fast plain outcomes are written one statement (its own
transaction) per owner and agent type, and whatever a grouped statement does not write goes through the
per-task path (chalicelib.services.processing, `TaskProcessor.write_deferred`)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from sqlalchemy import event, select, text, update

from chalicelib.agents.validation import ValidationAgent
from chalicelib.db.models import Task, TaskResult
from chalicelib.db.types import utcnow
from chalicelib.services.processing import Deferred, OutcomeGroups
from chalicelib.services.results import finish_plain, finish_plain_group, plain_outcome
from tests.integration.conftest import Api
from tests.integration.test_api_tasks import create_task
from tests.integration.test_consumer import message, run


def wide_window(container: Any) -> None:
    """A window no run here reaches, however loaded the machine: each owner's outcomes are one group."""
    container.settings = container.settings.model_copy(update={"consumer_group_window_seconds": 5.0})


def grouped_statements(db: Any) -> tuple[list[dict[str, Any]], Any]:
    """The grouped outcome statements' parameters, as they are executed; and the listener (to remove)."""
    seen: list[dict[str, Any]] = []

    def statement(conn: Any, cursor: Any, sql: str, params: Any, *args: Any) -> None:
        if "jsonb_array_elements" in sql:
            seen.append(dict(params))

    event.listen(db.engine, "before_cursor_execute", statement)
    return seen, statement


def statuses(db: Any, ids: list[str]) -> list[str]:
    with db.read() as session:
        rows = {str(r.id): r.status for r in session.execute(select(Task.id, Task.status))}
    return [rows[t] for t in ids]


def test_two_owners_in_one_batch_get_one_statement_and_transaction_each(
        api: Api, other_api: Api, db: Any, container: Any) -> None:
    # GIVEN one batch interleaving two owners' validation tasks
    wide_window(container)
    api.signup()
    other_api.signup()
    agents = [api.agent()["id"], other_api.agent()["id"]]
    ids = [create_task((api, other_api)[i % 2], agents[i % 2]).json_body["id"] for i in range(6)]
    with db.read() as session:
        owner_of = {str(r.id): str(r.user_id) for r in session.execute(select(Task.id, Task.user_id))}
    heard: list[tuple[str, str, str]] = []
    container.processor.finished = lambda user_id, task_id, status: heard.append((str(user_id), str(task_id), status))
    commits: list[int] = []
    seen, listener = grouped_statements(db)
    def on_commit(conn: Any) -> None:
        commits.append(1)

    event.listen(db.engine, "commit", on_commit)
    try:
        # WHEN the consumer runs it
        response = run([(f"m{i}", message(t)) for i, t in enumerate(ids)])
    finally:
        event.remove(db.engine, "before_cursor_execute", listener)
        event.remove(db.engine, "commit", on_commit)
    # THEN every task completed with one result ...
    assert response == {"batchItemFailures": []}
    assert statuses(db, ids) == ["completed"] * 6
    with db.read() as session:
        assert sorted(str(t) for t in session.scalars(select(TaskResult.task_id))) == sorted(ids)
    # ... written by two statements (each its own transaction: the claim's commit and one per owner), each
    # naming one owner and only that owner's tasks
    assert len(commits) == 1 + 2
    assert len(seen) == 2
    for params in seen:
        tasks = [row["task_id"] for row in json.loads(params["p_rows"])]
        assert {owner_of[t] for t in tasks} == {str(params["p_user"])}
        assert len(tasks) == 3
    assert {str(p["p_user"]) for p in seen} == set(owner_of.values())
    # ... and each task's wake-up hint went out after its group committed, with its owner and status
    assert sorted(heard) == sorted((owner_of[t], t, "completed") for t in ids)


class NotJsonFor(ValidationAgent):
    """Returns an output that cannot be stored (an agent bug) for the payload "bad"."""

    def run(self, data: Any, config: Any, ctx: Any = None) -> Any:
        from chalicelib.agents.base import AgentOutput

        if data.root.payload == "bad":
            return AgentOutput(output={"value": object()})
        return super().run(data, config, ctx)


def test_one_outcome_the_group_cannot_write_fails_only_its_record(api: Api, db: Any, container: Any) -> None:
    # GIVEN a batch of one owner's four tasks, the third of which produces an output that cannot be stored
    wide_window(container)
    container.processor.agent_loader = lambda agent_type: NotJsonFor()
    api.signup()
    agent = api.agent()
    payloads = ["ok", "ok", "bad", "ok"]
    ids = [create_task(api, agent["id"], input_data={"schema": {}, "payload": p}).json_body["id"] for p in payloads]
    seen, listener = grouped_statements(db)
    try:
        # WHEN the consumer runs it
        response = run([(f"m{i}", message(t)) for i, t in enumerate(ids)])
    finally:
        event.remove(db.engine, "before_cursor_execute", listener)
    # THEN the group could not be written as one (nothing of it reached the database), each outcome was written
    # on its own: exactly the bad record is reported, its claim given back for the retry, the others completed
    assert seen == []
    assert response == {"batchItemFailures": [{"itemIdentifier": "m2"}]}
    assert statuses(db, ids) == ["completed", "completed", "queued", "completed"]
    with db.read() as session:
        assert sorted(str(t) for t in session.scalars(select(TaskResult.task_id))) == sorted(
            [ids[0], ids[1], ids[3]])
    # ... and on its last attempt the bad one fails the task, as on the per-task path
    assert run([("r2", message(ids[2]))], receive_count=5) == {"batchItemFailures": []}
    got = api.call("GET", f"/tasks/{ids[2]}").json_body
    assert got["status"] == "failed" and got["error"]["code"] == "RESULT_NOT_STORED"


class CancelsFirst(ValidationAgent):
    """The second run cancels the first task (as a user would, while its outcome waits for its group)."""

    def __init__(self, db: Any, first: str) -> None:
        self.db, self.first, self.runs = db, first, 0

    def run(self, data: Any, config: Any, ctx: Any = None) -> Any:
        self.runs += 1
        if self.runs == 2:
            with self.db.statements() as conn:
                conn.execute(update(Task).where(Task.id == uuid.UUID(self.first)).values(status="cancelled"))
        return super().run(data, config, ctx)


def test_a_task_cancelled_while_its_outcome_waited_is_discarded_and_the_rest_of_its_group_completes(
        api: Api, db: Any, container: Any) -> None:
    wide_window(container)
    api.signup()
    agent = api.agent()
    ids = [create_task(api, agent["id"]).json_body["id"] for _ in range(3)]
    cancels = CancelsFirst(db, ids[0])
    container.processor.agent_loader = lambda agent_type: cancels
    heard: list[str] = []
    container.processor.finished = lambda user_id, task_id, status: heard.append(str(task_id))
    assert run([(f"m{i}", message(t)) for i, t in enumerate(ids)]) == {"batchItemFailures": []}
    assert statuses(db, ids) == ["cancelled", "completed", "completed"]
    with db.read() as session:
        results = {str(r.task_id): (r.status, r.output_data, r.metrics) for r in session.execute(
            select(TaskResult.task_id, TaskResult.status, TaskResult.output_data, TaskResult.metrics))}
    # The cancelled task's result row says so, with no output: the run's result is not the task's.
    status, output, metrics = results[ids[0]]
    assert (status, output, metrics["discarded"]) == ("cancelled", {}, "completed")
    assert results[ids[1]][0] == results[ids[2]][0] == "completed"
    assert sorted(heard) == sorted(ids[1:])  # no wake-up hint for the discarded run


class SlowFirst(ValidationAgent):
    """The first run takes 250 ms; each run notes what had committed when it started."""

    def __init__(self, db: Any, ids: list[str]) -> None:
        self.db, self.ids, self.seen = db, ids, []

    def run(self, data: Any, config: Any, ctx: Any = None) -> Any:
        with self.db.read() as session:
            self.seen.append([session.scalar(select(Task.status).where(Task.id == uuid.UUID(t))) for t in self.ids])
        if len(self.seen) == 1:
            time.sleep(0.25)
        return super().run(data, config, ctx)


def test_a_run_slower_than_the_window_writes_its_outcome_at_once(api: Api, db: Any, container: Any) -> None:
    container.settings = container.settings.model_copy(update={"consumer_group_window_seconds": 0.1})
    api.signup()
    agent = api.agent()
    ids = [create_task(api, agent["id"]).json_body["id"] for _ in range(3)]
    agent_impl = SlowFirst(db, ids)
    container.processor.agent_loader = lambda agent_type: agent_impl
    assert run([(f"m{i}", message(t)) for i, t in enumerate(ids)]) == {"batchItemFailures": []}
    # The slow first run's outcome committed before the second ran; the fast two waited for their group.
    assert agent_impl.seen == [["processing"] * 3, ["completed", "processing", "processing"],
                               ["completed", "processing", "processing"]]
    assert statuses(db, ids) == ["completed"] * 3


def test_the_grouped_statement_moves_only_its_owners_processing_tasks(api: Api, other_api: Api, db: Any) -> None:
    # GIVEN two owners' processing tasks and one of the first owner's that is still queued
    api.signup()
    other_api.signup()
    mine = [create_task(api, api.agent()["id"]).json_body["id"] for _ in range(2)]
    theirs = create_task(other_api, other_api.agent()["id"]).json_body["id"]
    with db.statements() as conn:
        conn.execute(update(Task).where(Task.id.in_([uuid.UUID(mine[0]), uuid.UUID(theirs)]))
                     .values(status="processing"))
    with db.read() as session:
        owner = session.scalar(select(Task.user_id).where(Task.id == uuid.UUID(mine[0])))
    outcomes = [plain_outcome(uuid.UUID(t), "completed", {"n": i}, {"duration_ms": 1.0}, None, started_at=utcnow())
                for i, t in enumerate([*mine, theirs])]
    # WHEN one grouped statement for the first owner names all three
    with db.statement() as conn:
        moved = finish_plain_group(conn, owner, "validation", outcomes)
    # THEN only that owner's processing task moved and got its result; the others are untouched
    assert moved == {uuid.UUID(mine[0])}
    assert statuses(db, [*mine, theirs]) == ["completed", "queued", "processing"]
    with db.read() as session:
        rows = session.execute(select(TaskResult.task_id, TaskResult.output_data)).all()
        error = session.scalar(select(Task.error).where(Task.id == uuid.UUID(mine[0])))
    assert [(str(r.task_id), r.output_data) for r in rows] == [(mine[0], {"n": 0})]
    # ... written as the per-task statement writes it (a null error is JSON null in both)
    with db.statements() as conn:
        conn.execute(update(Task).where(Task.id == uuid.UUID(mine[1])).values(status="processing"))
    with db.statement() as conn:
        assert finish_plain(conn, outcomes[1])
    with db.read() as session:
        stored = dict(session.execute(text("SELECT id::text, jsonb_typeof(error) FROM tasks WHERE id IN (:a, :b)"),
                                      {"a": mine[0], "b": mine[1]}).all())
    assert error is None and stored == {mine[0]: "null", mine[1]: "null"}


def test_outcome_groups_are_due_once_the_oldest_has_waited_the_window() -> None:
    now = [100.0]
    groups = OutcomeGroups(0.5, clock=lambda: now[0])
    assert not groups.due()  # nothing waits
    groups.add(Deferred(None, "completed", {}, {}, None, False, utcnow(), 100.0, {}))  # type: ignore[arg-type]
    now[0] = 100.25
    assert not groups.due()
    now[0] = 100.5
    assert groups.due()
    assert len(groups.take()) == 1 and len(groups) == 0 and not groups.due()


def test_a_batchs_urgent_tasks_run_first_and_the_rest_in_arrival_order(api: Api, db: Any, container: Any) -> None:
    # GIVEN a batch of five tasks of one owner, its high and critical ones last in arrival order
    api.signup()
    agent = api.agent()["id"]
    priorities = ["low", "normal", "high", "low", "critical"]
    ids = [create_task(api, agent, priority=p).json_body["id"] for p in priorities]
    ran: list[str] = []

    class Recording(ValidationAgent):
        def run(self, data: Any, config: Any, ctx: Any = None) -> Any:
            ran.append(str(ctx.task_id))
            return super().run(data, config, ctx)

    container.processor.agent_loader = lambda agent_type: Recording()
    # WHEN the consumer runs it
    response = run([(f"m{i}", message(t)) for i, t in enumerate(ids)])
    # THEN the urgent ones ran first (each group in arrival order), every record answered, all completed
    assert response == {"batchItemFailures": []}
    assert ran == [ids[2], ids[4], ids[0], ids[1], ids[3]]
    assert statuses(db, ids) == ["completed"] * 5
