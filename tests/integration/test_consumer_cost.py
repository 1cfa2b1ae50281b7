"""What one consumer batch costs in database round trips (issue 14, docs/consumers.md "Cost per task").

The figures are pinned: a change that adds a statement per task (an ORM read-back, an agent lookup, a second
result statement) fails here, where it is cheap to see, instead of in the benchmark.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from psycopg._connection_base import BaseConnection
from sqlalchemy import event, select

from chalicelib.agents.validation import SCHEMA_CACHE
from chalicelib.db.models import Task, TaskResult
from functions.agent_consumer import handler
from tests.integration.conftest import Api, FakeContext, sqs_event
from tests.integration.test_api_tasks import create_task


@contextmanager
def round_trips(db: Any) -> Iterator[Counter[str]]:
    """Statements by first word, commits, pool checkouts, and pings (`SELECT 1` before a checkout that was idle)."""
    seen: Counter[str] = Counter()

    def statement(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        seen[sql.split(None, 1)[0].upper()] += 1

    def commit(conn: Any) -> None:
        seen["COMMIT"] += 1

    def checkout(*args: Any) -> None:
        seen["CHECKOUT"] += 1

    # What the driver sends besides statements: BEGIN and COMMIT (psycopg's transaction commands).
    original = BaseConnection._exec_command

    def command(self: Any, cmd: Any, *args: Any, **kwargs: Any) -> Any:
        text = cmd if isinstance(cmd, bytes) else cmd.as_bytes(self) if hasattr(cmd, "as_bytes") else str(cmd)
        seen["wire " + (text.decode() if isinstance(text, bytes) else text).split()[0].upper()] += 1
        return original(self, cmd, *args, **kwargs)

    dialect = db.engine.dialect
    ping = dialect.do_ping

    def counted_ping(dbapi_conn: Any) -> bool:
        seen["PING"] += 1
        return bool(ping(dbapi_conn))

    dialect.do_ping = counted_ping  # type: ignore[method-assign]
    listeners = [(db.engine, "before_cursor_execute", statement), (db.engine, "commit", commit),
                 (db.engine.pool, "checkout", checkout)]
    for target, name, fn in listeners:
        event.listen(target, name, fn)
    BaseConnection._exec_command = command  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        BaseConnection._exec_command = original  # type: ignore[method-assign]
        del dialect.do_ping
        for target, name, fn in listeners:
            event.remove(target, name, fn)


def ten_task_batch(api: Api, db: Any) -> Counter[str]:
    # GIVEN ten queued validation tasks (one schema) delivered in one 10-record batch
    api.signup()
    agent = api.agent()
    ids = [create_task(api, agent["id"]).json_body["id"] for _ in range(10)]
    records = [(f"m{i}", json.dumps({"task_id": t, "agent_type": "validation"})) for i, t in enumerate(ids)]
    # WHEN the consumer runs the batch
    with round_trips(db) as seen:
        assert handler(sqs_event(records), FakeContext()) == {"batchItemFailures": []}
    # THEN every task completed with its result ...
    with db.read() as session:
        statuses = set(session.scalars(select(Task.status).where(Task.id.in_(ids))))
        results = session.scalars(select(TaskResult.output_data)).all()
    assert statuses == {"completed"} and len(results) == 10
    assert all(r["valid"] is True and r["error_count"] == 0 for r in results)
    return seen


def test_a_batch_of_ten_of_one_owner_costs_one_claim_and_one_outcome_statement(
        api: Api, db: Any, container: Any) -> None:
    # (a window no run reaches on a loaded machine: the ten outcomes are one group)
    container.settings = container.settings.model_copy(update={"consumer_group_window_seconds": 5.0})
    seen = ten_task_batch(api, db)
    # ... for one claim statement (which also returns each task's agent config) and one statement for the ten
    # outcomes (`WITH v AS (... jsonb_array_elements ...), moved AS (UPDATE tasks ...) INSERT INTO task_results`),
    # each its own transaction (no BEGIN or COMMIT over the wire) and checkout; no checkout is pinged, since
    # each connection went back to the pool moments before (IdlePing).
    assert seen == Counter({"UPDATE": 1, "WITH": 1, "COMMIT": 2, "CHECKOUT": 2})


def test_ungrouped_a_batch_of_ten_costs_one_claim_and_one_statement_and_commit_per_task(
        api: Api, db: Any, container: Any) -> None:
    container.settings = container.settings.model_copy(update={"consumer_group_window_seconds": 0.0})
    seen = ten_task_batch(api, db)
    # ... for one claim statement and one statement per task (`WITH moved AS (UPDATE tasks ...) INSERT INTO
    # task_results ...`), each its own commit and checkout.
    assert seen == Counter({"UPDATE": 1, "WITH": 10, "COMMIT": 11, "CHECKOUT": 11})


def test_tasks_sharing_a_schema_check_it_once(api: Api) -> None:
    # GIVEN three tasks with the same schema, one with another schema
    SCHEMA_CACHE.clear()
    api.signup()
    agent = api.agent()
    other = {"schema": {"type": "array", "maxItems": 1}, "payload": [1, 2]}
    ids = [create_task(api, agent["id"]).json_body["id"] for _ in range(3)]
    ids.append(create_task(api, agent["id"], input_data=other).json_body["id"])
    hits, misses = SCHEMA_CACHE.hits, SCHEMA_CACHE.misses
    # WHEN one batch runs them
    records = [(f"m{i}", json.dumps({"task_id": t, "agent_type": "validation"})) for i, t in enumerate(ids)]
    assert handler(sqs_event(records), FakeContext()) == {"batchItemFailures": []}
    # THEN each schema was meta-validated once, and each task still got its own answer
    assert (SCHEMA_CACHE.hits - hits, SCHEMA_CACHE.misses - misses) == (2, 2)
    outputs = [api.call("GET", f"/tasks/{t}").json_body["result"]["output_data"] for t in ids]
    assert [o["error_count"] for o in outputs] == [0, 0, 0, 1]
    assert outputs[3]["errors"][0]["validator"] == "maxItems"


@pytest.mark.parametrize("window", [0.0, 5.0], ids=["ungrouped", "grouped"])
def test_no_record_waits_for_a_wake_up_hint_but_the_batch_returns_after_all_of_them(
        api: Api, container: Any, monkeypatch: Any, window: float) -> None:
    # GIVEN a Redis hint that takes 50 ms per task (a slow network) and three tasks in one batch, their outcomes
    # written each on its own or as one owner group
    container.settings = container.settings.model_copy(update={"consumer_group_window_seconds": window})
    import threading
    import time

    api.signup()
    agent = api.agent()
    ids = [create_task(api, agent["id"]).json_body["id"] for _ in range(3)]
    heard: list[tuple[str, str]] = []
    main = threading.current_thread()
    ran_on: set[bool] = set()
    finished_when: list[float] = []

    def slow_hint(user_id: Any, task_id: Any, status: str) -> None:
        ran_on.add(threading.current_thread() is main)
        time.sleep(0.05)
        heard.append((str(task_id), status))

    monkeypatch.setattr(container.processor, "finished", slow_hint)
    original = container.processor._store

    def store(*args: Any, **kwargs: Any) -> Any:
        moved = original(*args, **kwargs)
        finished_when.append(time.perf_counter())
        return moved

    monkeypatch.setattr(container.processor, "_store", store)
    grouped_finish = container.processor._finished

    def finish(*args: Any, **kwargs: Any) -> Any:  # a grouped outcome, committed: its hint is queued here
        outcome = grouped_finish(*args, **kwargs)
        finished_when.append(time.perf_counter())
        return outcome

    monkeypatch.setattr(container.processor, "_finished", finish)
    records = [(f"m{i}", json.dumps({"task_id": t, "agent_type": "validation"})) for i, t in enumerate(ids)]
    # WHEN the consumer runs the batch
    assert handler(sqs_event(records), FakeContext()) == {"batchItemFailures": []}
    # THEN every hint was sent, in order, with its status, before the handler returned ...
    assert heard == [(t, "completed") for t in ids]
    # ... off the consumer's thread: the records' commits (or the group's tasks, after its one commit) followed
    # each other without waiting 50 ms per hint
    assert ran_on == {False}
    assert len(finished_when) == 3 and finished_when[-1] - finished_when[0] < 0.1
