"""The per-agent SQS consumer against real Postgres: claims, results, failures, duplicates."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from sqlalchemy import event, func, select

from chalicelib.agents.validation import ValidationAgent
from chalicelib.db.models import Task, TaskResult
from functions.agent_consumer import handler
from tests.integration.conftest import Api, FakeContext, sqs_event
from tests.integration.test_api_tasks import create_task

CODE = "import os\n\ndef f(x):\n    if x:\n        return 1\n    return undefined_name\n"


def message(task_id: str, agent_type: str = "validation") -> str:
    return json.dumps({"task_id": task_id, "agent_type": agent_type})


def run(records: list[tuple[str, str]], agent_type: str = "validation", receive_count: int = 1) -> dict[str, Any]:
    return handler(sqs_event(records, agent_type, receive_count), FakeContext())


def test_validation_task_completes_with_every_violation(api: Api) -> None:
    api.signup()
    agent = api.agent()
    schema = {"type": "object", "required": ["name", "age"],
              "properties": {"age": {"type": "integer", "minimum": 0}, "tags": {"type": "array",
                                                                                "items": {"type": "string"}}}}
    task = create_task(api, agent["id"], input_data={"schema": schema,
                                                     "payload": {"age": -1, "tags": ["ok", 3]}}).json_body
    assert run([("m1", message(task["id"]))]) == {"batchItemFailures": []}

    got = api.call("GET", f"/tasks/{task['id']}").json_body
    assert got["status"] == "completed" and got["attempts"] == 1 and got["completed_at"]
    output = got["result"]["output_data"]
    assert output["valid"] is False
    assert [(e["path"], e["validator"]) for e in output["errors"]] == [
        ("", "required"), ("/age", "minimum"), ("/tags/1", "type")]
    assert got["result"]["metrics"]["duration_ms"] >= 0


def test_examination_task_reports_real_analysis(api: Api) -> None:
    api.signup()
    agent = api.agent("examination")
    task = create_task(api, agent["id"], input_data={"source": CODE}).json_body
    assert run([("m1", message(task["id"], "examination"))], "examination") == {"batchItemFailures": []}
    output = api.call("GET", f"/tasks/{task['id']}").json_body["result"]["output_data"]
    assert output["valid_syntax"] is True
    assert [(f["name"], f["complexity"]) for f in output["functions"]] == [("f", 2)]
    assert {(finding["code"], finding["line"]) for finding in output["lint"]} == {
        ("UnusedImport", 1), ("UndefinedName", 6)}


def test_agent_error_marks_the_task_failed_with_the_error(api: Api) -> None:
    api.signup()
    agent = api.agent()
    task = create_task(api, agent["id"], input_data={"schema": {"type": "nonsense"}, "payload": 1}).json_body
    assert run([("m1", message(task["id"]))]) == {"batchItemFailures": []}
    got = api.call("GET", f"/tasks/{task['id']}").json_body
    assert got["status"] == "failed"
    assert got["error"]["code"] == "AGENT_INPUT_INVALID"
    assert got["result"]["status"] == "failed"


@pytest.mark.parametrize("body", ["not json", "{}", json.dumps({"agent_type": "validation"}),
                                  json.dumps({"task_id": "nope", "agent_type": "validation"}),
                                  json.dumps({"task_id": str(uuid.uuid4()), "agent_type": "validation"}),
                                  json.dumps({"task_id": str(uuid.uuid4()), "agent_type": "examination"})])
def test_malformed_messages_are_batch_failures_and_do_not_block_good_ones(api: Api, body: str) -> None:
    api.signup()
    task = create_task(api, api.agent()["id"]).json_body
    response = run([("bad", body), ("good", message(task["id"]))])
    assert response == {"batchItemFailures": [{"itemIdentifier": "bad"}]}
    assert api.call("GET", f"/tasks/{task['id']}").json_body["status"] == "completed"


def test_same_message_three_times_gives_exactly_one_result(api: Api, db: Any) -> None:
    api.signup()
    task = create_task(api, api.agent()["id"]).json_body
    body = message(task["id"])
    assert run([("a", body), ("b", body)]) == {"batchItemFailures": []}  # duplicate inside a batch
    assert run([("c", body)], receive_count=2) == {"batchItemFailures": []}  # and a later redelivery
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(TaskResult)) == 1
        assert session.scalar(select(Task.attempts)) == 1


def test_concurrent_duplicate_deliveries_run_the_task_once(api: Api, db: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    api.signup()
    task = create_task(api, api.agent()["id"]).json_body
    body = message(task["id"])
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda i: run([(f"m{i}", body)]), range(3)))
    assert results == [{"batchItemFailures": []}] * 3
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(TaskResult)) == 1


def test_cancelled_task_is_not_run(api: Api, db: Any) -> None:
    api.signup()
    task = create_task(api, api.agent()["id"]).json_body
    api.call("POST", f"/tasks/{task['id']}/cancel")
    assert run([("m1", message(task["id"]))]) == {"batchItemFailures": []}
    assert api.call("GET", f"/tasks/{task['id']}").json_body["status"] == "cancelled"
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(TaskResult)) == 0


class Probe(ValidationAgent):
    """A validation agent that looks at the database from outside while it runs."""

    def __init__(self, db: Any, others: list[str]) -> None:
        self.db, self.others = db, others
        self.checked_out: list[int] = []
        self.seen: list[list[str]] = []

    def run(self, data: Any, config: Any, ctx: Any = None) -> Any:
        self.checked_out.append(self.db.engine.pool.checkedout())
        with self.db.read() as session:  # another connection: sees only what has committed
            self.seen.append([session.scalar(select(Task.status).where(Task.id == uuid.UUID(t))) or ""
                              for t in self.others])
        return super().run(data, config, ctx)


def ungrouped(container: Any) -> None:
    """Every outcome written on its own as its run ends (no owner groups): the per-record path."""
    container.settings = container.settings.model_copy(update={"consumer_group_window_seconds": 0.0})


def probe_batch(api: Api, db: Any, container: Any) -> tuple[Probe, list[str], list[int]]:
    api.signup()
    agent = api.agent()
    ids = [create_task(api, agent["id"]).json_body["id"] for _ in range(3)]
    probe = Probe(db, ids)
    container.processor.agent_loader = lambda agent_type: probe
    commits: list[int] = []

    def on_commit(conn: Any) -> None:
        commits.append(1)

    event.listen(db.engine, "commit", on_commit)
    try:
        assert run([(f"m{i}", message(t)) for i, t in enumerate(ids)]) == {"batchItemFailures": []}
    finally:
        event.remove(db.engine, "commit", on_commit)
    return probe, ids, commits


def run_times(db: Any, ids: list[str]) -> list[tuple[Any, Any]]:
    with db.read() as session:
        times = {r.id: (r.started_at, r.completed_at) for r in session.execute(
            select(Task.id, Task.started_at, Task.completed_at))}
    return [times[uuid.UUID(t)] for t in ids]


def test_each_record_commits_on_its_own_and_no_connection_is_held_while_an_agent_runs(
        api: Api, db: Any, container: Any) -> None:
    ungrouped(container)
    probe, ids, commits = probe_batch(api, db, container)
    # While an agent ran, the consumer held no connection; earlier records were already committed.
    assert probe.checked_out == [0, 0, 0]
    assert probe.seen == [["processing", "processing", "processing"], ["completed", "processing", "processing"],
                          ["completed", "completed", "processing"]]
    assert len(commits) == 1 + 3  # one claim for the batch, then each result on its own
    runs = run_times(db, ids)
    # started_at is when each run started, not when the batch claimed it.
    assert all(later[0] >= earlier[1] for earlier, later in zip(runs, runs[1:], strict=False))


def test_one_owners_fast_outcomes_commit_together_after_the_runs_and_no_connection_is_held_while_an_agent_runs(
        api: Api, db: Any, container: Any) -> None:
    # (a window no run reaches on a loaded machine: the three outcomes are one group)
    container.settings = container.settings.model_copy(update={"consumer_group_window_seconds": 5.0})
    probe, ids, commits = probe_batch(api, db, container)
    # While an agent ran, the consumer held no connection; the outcomes waited for their group ...
    assert probe.checked_out == [0, 0, 0]
    assert probe.seen == [["processing", "processing", "processing"]] * 3
    assert len(commits) == 1 + 1  # ... one claim for the batch, one statement for the owner's three outcomes
    runs = run_times(db, ids)
    # started_at and completed_at are still each run's own (completed_at: when the run ended, not the write).
    assert all(later[0] >= earlier[1] for earlier, later in zip(runs, runs[1:], strict=False))


class Clock:
    def __init__(self, remaining_ms: list[int]) -> None:
        self.remaining = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining.pop(0) if len(self.remaining) > 1 else self.remaining[0]


def test_records_past_the_invocation_budget_are_reported_and_not_run(api: Api, db: Any, container: Any) -> None:
    api.signup()
    agent = api.agent()
    ids = [create_task(api, agent["id"]).json_body["id"] for _ in range(3)]
    context = FakeContext()
    # The first record starts with a minute left; then only 4 s are (default reserve: 10 s per record).
    context.get_remaining_time_in_millis = Clock([60_000, 60_000, 4_000]).get_remaining_time_in_millis  # type: ignore[method-assign]
    response = handler(sqs_event([(f"m{i}", message(t)) for i, t in enumerate(ids)]), context)
    assert response == {"batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": "m2"}]}
    with db.read() as session:
        rows = {str(r.id): (r.status, r.attempts) for r in session.execute(select(Task.id, Task.status, Task.attempts))}
    assert rows == {ids[0]: ("completed", 1), ids[1]: ("queued", 0), ids[2]: ("queued", 0)}


class ProcessDied(BaseException):
    """Stands for the process going away (Lambda timeout, OOM): nothing after it runs, no cleanup."""


class Dies(ValidationAgent):
    def run(self, data: Any, config: Any, ctx: Any = None) -> Any:
        raise ProcessDied


def test_a_claimer_that_died_holds_the_task_until_its_invocation_is_over_then_redelivery_runs_it(
        api: Api, db: Any, container: Any) -> None:
    from datetime import timedelta

    from chalicelib.db.types import utcnow

    api.signup()
    task = create_task(api, api.agent()["id"]).json_body
    body = message(task["id"])
    container.processor.agent_loader = lambda agent_type: Dies()
    with pytest.raises(ProcessDied):
        run([("m1", body)])
    got = api.call("GET", f"/tasks/{task['id']}").json_body
    assert (got["status"], got["attempts"]) == ("processing", 1)  # the claim committed

    # A duplicate delivery while the claimer's invocation could still be running: acknowledged, not run.
    from chalicelib.agents.validation import ValidationAgent as Real

    container.processor.agent_loader = lambda agent_type: Real()
    assert run([("m2", body)]) == {"batchItemFailures": []}
    assert api.call("GET", f"/tasks/{task['id']}").json_body["status"] == "processing"

    # SQS redelivers m1 after its visibility timeout (6x the function timeout): the claim lease has passed.
    container.processor.clock = lambda: utcnow() + timedelta(minutes=7)
    assert run([("m1", body)], receive_count=2) == {"batchItemFailures": []}
    got = api.call("GET", f"/tasks/{task['id']}").json_body
    assert (got["status"], got["attempts"]) == ("completed", 2)
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(TaskResult)) == 1


def test_a_redelivery_after_the_result_committed_is_a_no_op(api: Api, db: Any, container: Any) -> None:
    from datetime import timedelta

    from chalicelib.db.types import utcnow

    api.signup()
    task = create_task(api, api.agent()["id"]).json_body
    body = message(task["id"])
    assert run([("m1", body)]) == {"batchItemFailures": []}  # result committed; say the delete was lost
    container.processor.clock = lambda: utcnow() + timedelta(minutes=7)
    assert run([("m1", body)], receive_count=2) == {"batchItemFailures": []}
    got = api.call("GET", f"/tasks/{task['id']}").json_body
    assert (got["status"], got["attempts"]) == ("completed", 1)
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(TaskResult)) == 1


def test_two_concurrent_consumers_run_a_slow_task_once(api: Api, db: Any, container: Any) -> None:
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    runs: list[int] = []
    lock = threading.Lock()

    class Slow(ValidationAgent):
        def run(self, data: Any, config: Any, ctx: Any = None) -> Any:
            with lock:
                runs.append(1)
            time.sleep(0.3)  # the other consumer claims meanwhile
            return super().run(data, config, ctx)

    api.signup()
    task = create_task(api, api.agent()["id"]).json_body
    container.processor.agent_loader = lambda agent_type: Slow()
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda i: run([(f"m{i}", message(task["id"]))], receive_count=1 + i), range(2)))
    assert results == [{"batchItemFailures": []}] * 2
    assert len(runs) == 1
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(TaskResult)) == 1


def test_an_unexpected_crash_is_retried_then_fails_the_task_on_the_last_attempt(api: Api, container: Any) -> None:
    class CrashOnPayload(ValidationAgent):
        def run(self, data: Any, config: Any, ctx: Any = None) -> Any:
            if data.root.payload == "crash":  # ValidationInput is {schema, payload} | {records, rules}
                raise RuntimeError("boom")
            return super().run(data, config, ctx)

    container.processor.agent_loader = lambda agent_type: CrashOnPayload()
    api.signup()
    agent = api.agent()
    task = create_task(api, agent["id"], input_data={"schema": {}, "payload": "crash"}).json_body
    other = create_task(api, agent["id"]).json_body
    # First delivery: only the crashing record is reported; its neighbour completes.
    response = run([("m1", message(task["id"])), ("m2", message(other["id"]))], receive_count=1)
    assert response == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    assert api.call("GET", f"/tasks/{task['id']}").json_body["status"] == "queued"
    assert api.call("GET", f"/tasks/{other['id']}").json_body["status"] == "completed"
    # A batch whose every record fails raises, so Lambda retries the whole batch.
    with pytest.raises(BatchProcessingError):
        run([("m3", message(task["id"]))], receive_count=2)
    # Last delivery (receive count == maxReceiveCount): the task fails instead of waiting forever.
    assert run([("m4", message(task["id"]))], receive_count=5) == {"batchItemFailures": []}
    got = api.call("GET", f"/tasks/{task['id']}").json_body
    assert got["status"] == "failed" and got["error"]["code"] == "AGENT_CRASHED"


BAD_TEXT = "a\u0000b\ud800c"  # NUL and a lone surrogate: neither can be stored by Postgres


class Unstorable(ValidationAgent):
    """Answers the way a misbehaving model can: text Postgres refuses, in output, metrics or an error."""

    def run(self, data: Any, config: Any, ctx: Any = None) -> Any:
        from chalicelib.agents.base import AgentOutput
        from chalicelib.errors import AgentError

        if data.root.payload == "fail":
            raise AgentError(f"provider said: {BAD_TEXT}", {"body": BAD_TEXT, BAD_TEXT: 1})
        return AgentOutput(output={"text": BAD_TEXT, "nested": [{BAD_TEXT: BAD_TEXT}], "score": float("nan")},
                           metrics={"note": BAD_TEXT})


def test_text_postgres_cannot_store_is_replaced_and_the_task_finishes(api: Api, container: Any) -> None:
    container.processor.agent_loader = lambda agent_type: Unstorable()
    api.signup()
    agent = api.agent()
    ok = create_task(api, agent["id"], input_data={"schema": {}, "payload": "ok"}).json_body
    bad = create_task(api, agent["id"], input_data={"schema": {}, "payload": "fail"}).json_body
    assert run([("m1", message(ok["id"])), ("m2", message(bad["id"]))]) == {"batchItemFailures": []}
    clean = "a\ufffdb\ufffdc"
    got = api.call("GET", f"/tasks/{ok['id']}").json_body
    assert got["status"] == "completed"
    assert got["result"]["output_data"] == {"text": clean, "nested": [{clean: clean}], "score": None}
    assert got["result"]["metrics"]["note"] == clean
    failed = api.call("GET", f"/tasks/{bad['id']}").json_body
    assert failed["status"] == "failed"
    assert failed["error"]["message"] == f"provider said: {clean}"
    assert failed["error"]["details"] == {"body": clean, clean: 1}


def test_a_result_that_cannot_be_stored_fails_the_task_on_the_last_attempt(api: Api, container: Any) -> None:
    from chalicelib.agents.base import AgentOutput

    class NotJson(ValidationAgent):
        def run(self, data: Any, config: Any, ctx: Any = None) -> Any:
            return AgentOutput(output={"value": object()})  # an agent bug: not JSON

    container.processor.agent_loader = lambda agent_type: NotJson()
    api.signup()
    task = create_task(api, api.agent()["id"]).json_body
    with pytest.raises(BatchProcessingError):  # the only record failed: SQS retries it
        run([("m1", message(task["id"]))], receive_count=1)
    assert api.call("GET", f"/tasks/{task['id']}").json_body["status"] == "queued"  # given back for the retry
    assert run([("m3", message(task["id"]))], receive_count=5) == {"batchItemFailures": []}
    got = api.call("GET", f"/tasks/{task['id']}").json_body
    assert got["status"] == "failed" and got["error"]["code"] == "RESULT_NOT_STORED"
