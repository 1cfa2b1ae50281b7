"""Consumer faults not covered by tests/integration/test_consumer.py (docs/faults.md maps each guarantee to its test):
a mixed batch with two failing records, the database connection terminated mid-batch, and any JSON body."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, func, select, text

from chalicelib.agents.validation import ValidationAgent
from chalicelib.db.models import Task, TaskResult
from tests.integration.conftest import Api
from tests.integration.faults_support import Faulty
from tests.integration.test_api_tasks import create_task
from tests.integration.test_consumer import message, run


def test_a_mixed_batch_reports_exactly_the_two_failing_records_and_commits_the_rest_once(
        api: Api, db: Any, container: Any) -> None:
    class CrashOnPayload(ValidationAgent):
        def run(self, data: Any, config: Any, ctx: Any = None) -> Any:
            if data.root.payload == "crash":
                raise RuntimeError("boom")
            return super().run(data, config, ctx)

    container.processor.agent_loader = lambda agent_type: CrashOnPayload()
    api.signup()
    agent = api.agent()
    payloads = ["ok", "crash", "ok", "ok", "crash", "ok"]
    ids = [create_task(api, agent["id"], input_data={"schema": {}, "payload": p}).json_body["id"] for p in payloads]
    response = run([(f"m{i}", message(t)) for i, t in enumerate(ids)])
    assert response == {"batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": "m4"}]}
    with db.read() as session:
        rows = {str(r.id): (r.status, r.attempts) for r in session.execute(select(Task.id, Task.status, Task.attempts))}
        results = session.scalar(select(func.count()).select_from(TaskResult))
    assert [rows[t] for t in ids] == [("completed", 1), ("queued", 1), ("completed", 1), ("completed", 1),
                                      ("queued", 1), ("completed", 1)]
    assert results == 4
    # The whole batch redelivered (as if nothing was deleted): finished ones are no-ops.
    container.processor.agent_loader = lambda agent_type: ValidationAgent()
    assert run([(f"r{i}", message(t)) for i, t in enumerate(ids)], receive_count=2) == {"batchItemFailures": []}
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(TaskResult)) == 6
        assert sorted(session.scalars(select(Task.attempts))) == [1, 1, 1, 1, 2, 2]


def _terminate_own_database_backends(direct: Any) -> int:
    """Ends every connection to *this test's* database but the one asking (never other sessions' databases)."""
    with direct.engine.connect() as conn:
        killed = conn.execute(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                   "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar_one()
        conn.commit()
    return int(killed)


def _three_tasks(client: Any) -> tuple[Api, list[str]]:
    """A new user's three queued tasks of one agent: (their API, the task ids)."""
    api = Api(client)
    api.signup()
    agent = api.agent()
    return api, [create_task(api, agent["id"]).json_body["id"] for _ in range(3)]


def _run_watched(faulty: Faulty, ids: list[str], before_statement: Callable[..., None]) -> dict[str, Any]:
    """The consumer runs one batch of `ids` (records m0, m1, ...) with `before_statement` seeing every statement."""
    event.listen(faulty.db.engine, "before_cursor_execute", before_statement)
    try:
        return run([(f"m{i}", message(t)) for i, t in enumerate(ids)])
    finally:
        event.remove(faulty.db.engine, "before_cursor_execute", before_statement)


def test_connection_terminated_mid_batch_fails_that_record_only_and_the_next_batch_succeeds(
        faulty: Faulty, faulty_client: Any) -> None:
    # Each outcome on its own (no owner groups): the second record's write is the one that dies.
    faulty.container.settings = faulty.container.settings.model_copy(update={"consumer_group_window_seconds": 0.0})
    api, ids = _three_tasks(faulty_client)
    killed: list[int] = []

    def kill_before_second_result(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # The consumer is inside the second record's outcome transaction: its connection dies under it.
        # (On Postgres the result row is written by the statement that finishes the task: WITH moved ... INSERT.)
        if "INSERT INTO TASK_RESULTS" in statement.upper() and not killed:
            with faulty.direct.read() as session:
                done = session.scalar(select(func.count()).select_from(TaskResult))
            if done == 1:
                killed.append(_terminate_own_database_backends(faulty.direct))

    response = _run_watched(faulty, ids, kill_before_second_result)
    assert killed and killed[0] >= 1
    assert response == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    with faulty.direct.read() as session:
        rows = {str(r.id): r.status for r in session.execute(select(Task.id, Task.status))}
        result_ids = {str(t) for t in session.scalars(select(TaskResult.task_id))}
    # Nothing half-written: the killed record has neither a result nor a finished status.
    assert [rows[t] for t in ids] == ["completed", "queued", "completed"]
    assert result_ids == {ids[0], ids[2]}
    # Same process, same engine: the next batch (the redelivery) succeeds.
    assert run([("m1", message(ids[1]))], receive_count=2) == {"batchItemFailures": []}
    assert api.call("GET", f"/tasks/{ids[1]}").json_body["status"] == "completed"


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda children: st.lists(children, max_size=4)
                    | st.dictionaries(st.text(max_size=10), children, max_size=4), max_leaves=10)
MESSAGE_LIKE = st.fixed_dictionaries({"task_id": st.one_of(st.uuids().map(str), st.text(max_size=40), JSON),
                                      "agent_type": st.one_of(st.just("validation"), st.text(max_size=20), JSON)},
                                     optional={"extra": JSON})


GOOD: list[str] = []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(JSON, MESSAGE_LIKE).map(json.dumps) | st.text(max_size=200))
def test_no_body_makes_the_agent_consumer_raise_out_of_its_handler(api: Api, container: Any, body: str) -> None:
    if api.token is None:  # once per test, not per example (the fixtures are shared by every example)
        api.signup()
        GOOD[:] = [create_task(api, api.agent()["id"]).json_body["id"]]
    response = run([("fuzz", body), ("good", message(GOOD[0]))])  # a good neighbour: the batch never wholly fails
    assert response["batchItemFailures"] in ([], [{"itemIdentifier": "fuzz"}])
    assert api.call("GET", f"/tasks/{GOOD[0]}").json_body["status"] == "completed"


def test_connection_terminated_under_a_grouped_outcome_write_loses_no_record(
        faulty: Faulty, faulty_client: Any) -> None:
    # GIVEN three tasks of one owner in one batch, their outcomes written as one group
    _, ids = _three_tasks(faulty_client)
    killed: list[int] = []
    grouped: list[str] = []

    def kill_under_the_group(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "jsonb_array_elements" in statement:
            grouped.append(statement)
            if not killed:  # the grouped statement's connection dies under it
                killed.append(_terminate_own_database_backends(faulty.direct))

    # WHEN the consumer runs the batch
    response = _run_watched(faulty, ids, kill_under_the_group)
    # THEN the grouped statement failed (written once, nothing of it committed) and each outcome was written on
    # its own instead: no record is reported, each task completed with exactly one result
    assert killed and killed[0] >= 1 and len(grouped) == 1
    assert response == {"batchItemFailures": []}
    with faulty.direct.read() as session:
        rows = {str(r.id): r.status for r in session.execute(select(Task.id, Task.status))}
        results = sorted(str(t) for t in session.scalars(select(TaskResult.task_id)))
    assert [rows[t] for t in ids] == ["completed"] * 3
    assert results == sorted(ids)


class _Delays:
    """The consumer's visibility port, recording when each failed record is to come back."""

    def __init__(self) -> None:
        self.seconds: list[int] = []

    def delay(self, queue_arn: str, receipt_handle: str, seconds: int) -> bool:
        self.seconds.append(seconds)
        return True


@pytest.mark.parametrize("group_window", [0.0, 0.05], ids=["outcome alone", "grouped outcome"])
def test_an_outcome_not_stored_whose_claim_was_not_given_back_returns_only_after_the_claim_lapsed(
        api: Api, db: Any, container: Any, monkeypatch: pytest.MonkeyPatch, group_window: float) -> None:
    # Postgres goes away between the claim and the outcome: neither the outcome nor the claim's release commits.
    # A record back after the usual short infrastructure delay (5 s) would find the task held by the live lease
    # and be acknowledged as a duplicate, leaving it `processing` with no message (bench/fault_load.py lost 1-3
    # of 1,000 tasks that way). It must come back once the lease lapsed, when it can claim the task again.
    from sqlalchemy.exc import OperationalError

    import chalicelib.services.processing as processing

    def down(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("UPDATE tasks ...", {}, ConnectionError("server closed the connection"))

    container.settings = container.settings.model_copy(update={"consumer_group_window_seconds": group_window})
    api.signup()
    task_id = create_task(api, api.agent()["id"]).json_body["id"]
    delays = _Delays()
    monkeypatch.setitem(container.__dict__, "visibility", delays)
    for name in ("finish_plain", "finish_plain_group", "store_plain_outcome"):
        monkeypatch.setattr(processing, name, down)
    monkeypatch.setattr(container.processor, "_held", down)

    with pytest.raises(BatchProcessingError):  # every record of the batch failed: the handler raises
        run([("m0", message(task_id))])
    with db.read() as session:
        status, lease = session.execute(select(Task.status, Task.lease_expires_at).where(Task.id == task_id)).one()
    assert status == "processing" and lease is not None
    held_for = (lease - container.processor.clock()).total_seconds()
    assert held_for > container.settings.infra_retry_seconds  # the short delay would have been too early
    assert delays.seconds and min(delays.seconds) >= held_for
