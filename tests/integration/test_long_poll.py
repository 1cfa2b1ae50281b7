"""GET /tasks/{id}?wait=N and GET /runs/{id}?wait=N against real Postgres and Redis (docs/events.md, "Long-poll").

The notifier (which publishes every event on its user's Redis channel) is stood in for by `publish_new`: what
it would publish after a commit. Without it the long-poll still answers, at its next 2 s database re-check.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import update

from chalicelib.container import Container
from chalicelib.db.session import Database
from chalicelib.db.types import utcnow
from chalicelib.db.workflow_models import WorkflowRun
from chalicelib.events import ledger, live
from tests.integration.conftest import Api
from tests.integration.test_api_auth import assert_envelope
from tests.integration.test_api_tasks import create_task
from tests.integration.test_consumer import message, run
from tests.integration.worker_helpers import user_id
from tests.integration.workflow_support import WorkflowHarness, harness, make_agent, make_user, wf_aws, wf_container

__all__ = ["harness", "wf_aws", "wf_container"]


def publish_new(c: Container, owner: uuid.UUID, after: int = 0) -> int:
    """What the notifier does after a commit: publish the user's new events on their channel."""
    with c.db.read() as session:
        events = ledger.list_after(session, owner, after, 500)
    for event in events:
        live.publish(c.redis, c.settings.redis_key_prefix, event)
    return events[-1].event_id if events else after


@contextmanager
def later(delay: float, action: Callable[[], Any]) -> Iterator[threading.Thread]:
    """Run `action` on another thread after `delay` seconds, while the body runs."""
    thread = threading.Thread(target=lambda: (time.sleep(delay), action()))
    thread.start()
    yield thread
    thread.join(10)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = fn()
    return result, time.monotonic() - started


@pytest.fixture
def task_of(api: Api, db: Database) -> tuple[str, uuid.UUID]:
    me = api.signup()
    task = create_task(api, api.agent()["id"]).json_body
    return task["id"], user_id(db, me["username"])


def test_wait_answers_as_soon_as_the_task_completes(api: Api, container: Container,
                                                   task_of: tuple[str, uuid.UUID]) -> None:
    task_id, owner = task_of

    def complete() -> None:
        assert run([("m1", message(task_id))]) == {"batchItemFailures": []}
        publish_new(container, owner)

    with later(0.5, complete):
        r, elapsed = timed(lambda: api.call("GET", f"/tasks/{task_id}?wait=10"))
    assert r.status_code == 200 and r.json_body["status"] == "completed"
    assert r.json_body["result"]["status"] == "completed"  # fresh: the result written with the status
    # woken by the channel: well before the 2 s database re-check, let alone the 10 s wait
    assert 0.5 <= elapsed < 1.5, elapsed


def test_without_a_notifier_the_consumers_hint_answers(api: Api, task_of: tuple[str, uuid.UUID]) -> None:
    task_id, _ = task_of
    with later(0.5, lambda: run([("m1", message(task_id))])):
        r, elapsed = timed(lambda: api.call("GET", f"/tasks/{task_id}?wait=10"))
    assert r.json_body["status"] == "completed"
    # live.TaskWake, published by the consumer right after its commit: before the 2 s database re-check
    assert 0.5 <= elapsed < 1.5, elapsed


def test_without_any_wake_up_the_database_recheck_answers(api: Api, container: Container,
                                                          task_of: tuple[str, uuid.UUID],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    task_id, _ = task_of
    monkeypatch.setattr(container.processor, "finished", None)  # no hint, no notifier: only the re-reads
    with later(0.5, lambda: run([("m1", message(task_id))])):
        r, elapsed = timed(lambda: api.call("GET", f"/tasks/{task_id}?wait=10"))
    assert r.json_body["status"] == "completed"
    assert 1.9 <= elapsed < 3.5, elapsed  # the re-check after 2 s, not the 10 s deadline


def test_the_consumers_hint_is_published_after_the_commit(container: Container,
                                                          task_of: tuple[str, uuid.UUID]) -> None:
    """What the hint says, and that the outcome is readable when it is heard."""
    import json

    task_id, owner = task_of
    subscription = container.redis.pubsub()
    subscription.subscribe(live.channel(container.settings.redis_key_prefix, owner))
    assert subscription.get_message(timeout=1.0)["type"] == "subscribe"
    try:
        assert run([("m1", message(task_id))]) == {"batchItemFailures": []}
        heard = subscription.get_message(timeout=2.0)
    finally:
        subscription.close()
    assert heard is not None and heard["type"] == "message"
    assert json.loads(heard["data"]) == {"type": live.TASK_FINISHED_HINT,
                                         "resource": {"type": "task", "id": task_id}, "status": "completed"}
    assert container.tasks.get(owner, uuid.UUID(task_id)).status == "completed"


def test_while_it_waits_it_reads_the_record_and_the_read_that_finds_it_finished_is_the_answer(
        api: Api, container: Container, task_of: tuple[str, uuid.UUID], monkeypatch: pytest.MonkeyPatch) -> None:
    """Each read is one statement (TaskService.record); no read through the cache; the answer is the last read."""
    task_id, owner = task_of
    tasks = container.tasks
    cached_reads: list[str] = []
    reads: list[str | None] = []
    real_get, real_record = tasks.get, tasks.record
    monkeypatch.setattr(tasks, "get", lambda u, t: (cached_reads.append(str(t)), real_get(u, t))[1])
    monkeypatch.setattr(tasks, "record",
                        lambda u, t: (reads.append(None if (r := real_record(u, t)) is None else r.status), r)[1])
    with later(0.5, lambda: run([("m1", message(task_id))])):
        r = api.call("GET", f"/tasks/{task_id}?wait=10")
    assert r.status_code == 200 and r.json_body["status"] == "completed"
    assert cached_reads == []
    # before and after subscribing; then the consumer's hint wakes it and the next read finds it completed
    assert reads == ["queued", "queued", "completed"]
    assert r.json_body == api.call("GET", f"/tasks/{task_id}").json_body  # the same JSON as the plain GET
    assert cached_reads == [task_id]
    # an unknown id, or another user's, reads None and answers 404 at once
    other = api.call("GET", f"/tasks/{uuid.uuid4()}?wait=5")
    assert other.status_code == 404
    assert real_record(uuid.uuid4(), uuid.UUID(task_id)) is None and real_record(owner, uuid.UUID(task_id))


def test_a_wake_up_that_the_read_does_not_bear_out_does_not_end_the_wait(api: Api, container: Container,
                                                                           task_of: tuple[str, uuid.UUID]) -> None:
    """A hint that the task finished causes a read, which has the last word."""
    import json

    task_id, owner = task_of
    hint = json.dumps({"type": live.TASK_FINISHED_HINT, "resource": {"type": "task", "id": task_id},
                       "status": "completed"})
    name = live.channel(container.settings.redis_key_prefix, owner)
    with later(0.3, lambda: container.redis.publish(name, hint)):
        r, elapsed = timed(lambda: api.call("GET", f"/tasks/{task_id}?wait=1.2"))
    assert r.status_code == 200 and r.json_body["status"] == "queued"
    assert elapsed >= 1.2, elapsed  # not answered at the (false) hint


def test_after_n_seconds_it_answers_with_the_current_state(api: Api, task_of: tuple[str, uuid.UUID]) -> None:
    task_id, _ = task_of
    r, elapsed = timed(lambda: api.call("GET", f"/tasks/{task_id}?wait=1"))
    assert r.status_code == 200 and r.json_body["status"] == "queued"
    assert 1.0 <= elapsed < 1.8, elapsed


def test_a_finished_task_answers_at_once(api: Api, task_of: tuple[str, uuid.UUID]) -> None:
    task_id, _ = task_of
    run([("m1", message(task_id))])
    r, elapsed = timed(lambda: api.call("GET", f"/tasks/{task_id}?wait=20"))
    assert r.json_body["status"] == "completed" and elapsed < 0.5, elapsed


def test_waiting_holds_no_database_connection(api: Api, db: Database, task_of: tuple[str, uuid.UUID]) -> None:
    task_id, _ = task_of
    held: list[int] = []

    def sample() -> None:
        time.sleep(0.3)  # past the reads at the start
        while len(held) < 20:  # until ~1.3 s: before the read at the 1.5 s deadline
            held.append(db.engine.pool.checkedout())  # type: ignore[attr-defined]
            time.sleep(0.05)

    with later(0, sample):
        r = api.call("GET", f"/tasks/{task_id}?wait=1.5")
    assert r.json_body["status"] == "queued"
    assert len(held) == 20 and max(held) == 0, held


def test_another_users_task_is_404_at_once(api: Api, other_api: Api, task_of: tuple[str, uuid.UUID]) -> None:
    task_id, _ = task_of
    other_api.signup()
    r, elapsed = timed(lambda: other_api.call("GET", f"/tasks/{task_id}?wait=5"))
    assert_envelope(r, 404, "NOT_FOUND")
    assert elapsed < 0.5


@pytest.mark.parametrize("wait", ["0", "21", "abc", "-1", "", "20.5"])
@pytest.mark.parametrize("route", ["/tasks", "/runs"])
def test_a_bad_wait_is_422(api: Api, route: str, wait: str) -> None:
    api.signup()
    error = assert_envelope(api.call("GET", f"{route}/{uuid.uuid4()}?wait={wait}"), 422, "VALIDATION_ERROR")
    assert error["details"]["errors"][0]["loc"] == ["query", "wait"]


def test_unknown_query_parameters_are_422(api: Api, task_of: tuple[str, uuid.UUID]) -> None:
    task_id, _ = task_of
    assert_envelope(api.call("GET", f"/tasks/{task_id}?wiat=5"), 422, "VALIDATION_ERROR")


def test_only_events_of_the_resource_cause_a_re_read(container: Container) -> None:
    """The waiter listens on the user's channel; an event of another task there costs no database read."""
    owner, task_id, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    reads: list[float] = []
    waiter = container.long_poll.waiter
    prefix = container.settings.redis_key_prefix

    def publish(resource: uuid.UUID) -> None:
        event = ledger.Event(owner, 1, "task.status_changed", "task", resource, None, None, "completed",
                             utcnow(), {})
        assert live.publish(container.redis, prefix, event) == 1  # the waiter is subscribed

    def read() -> str:
        reads.append(time.monotonic())
        return "waiting"

    def wakes(event: dict[str, Any]) -> bool:
        return bool(event["resource"]["id"] == str(task_id))

    def events() -> None:
        publish(other)
        time.sleep(0.2)
        publish(task_id)

    with later(0.3, events):
        started = time.monotonic()
        assert waiter.wait(owner, read, lambda v: False, wakes, 1.5) == "waiting"
    # the first read, the one after subscribing, then one for task_id's event at ~0.5 s (not at 0.3 s for
    # the other task's), then the deadline's
    assert len(reads) == 4
    assert 0.45 <= reads[2] - started < 0.9 and reads[3] - started >= 1.5


def test_a_finished_wait_leaves_its_connection_for_the_next_one_and_nothing_of_its_channel(
        container: Container) -> None:
    """redis-py disconnects a closed PubSub: each wait paid a connect and the handshake. A finished wait
    unsubscribes and keeps the connection; the next wait (another user's) hears only its own channel."""
    waiter = live.Waiter(container.redis, container.settings.redis_key_prefix, recheck_seconds=0.5)
    first_user, second_user, task_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    reads: list[str] = []

    def read(label: str) -> Callable[[], int]:
        def inner() -> int:
            reads.append(label)
            return sum(1 for r in reads if r == label)
        return inner

    # the first wait subscribes (its first read is not done), then the read after subscribing is
    assert waiter.wait(first_user, read("a"), lambda n: n >= 2, lambda e: True, 5) == 2
    assert len(waiter._idle) == 1
    kept = waiter._idle[0]
    old = ledger.Event(first_user, 1, "task.status_changed", "task", task_id, None, None, "completed", utcnow(), {})

    def stale() -> None:  # the first user's event, naming the task the second wait waits for
        live.publish(container.redis, container.settings.redis_key_prefix, old)

    with later(0.1, stale):
        started = time.monotonic()
        assert waiter.wait(second_user, read("b"), lambda n: n >= 3,
                           lambda e: e["resource"]["id"] == str(task_id), 0.9) == 3
    # not woken by the stale event: its third read is the 0.5 s re-check's, not one at 0.1 s
    assert time.monotonic() - started >= 0.45
    assert waiter._idle == [kept]  # the same connection served both waits


def test_without_redis_it_polls_the_database(db: Database) -> None:
    waiter = live.Waiter(None, "p:", recheck_seconds=0.2)
    reads: list[int] = []

    def read() -> int:
        reads.append(1)
        return len(reads)

    value, elapsed = timed(lambda: waiter.wait(uuid.uuid4(), read, lambda n: n >= 3, lambda e: True, 5))
    assert value == 3 and 0.35 <= elapsed < 1.0


def test_a_run_wait_answers_when_the_run_waits_for_approval(harness: WorkflowHarness) -> None:
    owner = make_user(harness.db)
    make_agent(harness.db, owner)
    workflow = harness.create(owner, {"steps": [
        {"step_id": "check", "agent_type": "validation",
         "input_data": {"schema": {"type": "object"}, "payload": {}}},
        {"step_id": "gate", "type": "approval", "depends_on": ["check"]}]})
    run_id = harness.start(owner, workflow)
    c = harness.c
    seen = publish_new(c, owner)

    def gate() -> None:  # what the workflow control consumer does when the approval state is reached
        with c.db.transaction() as session:
            session.execute(update(WorkflowRun).where(WorkflowRun.id == run_id).values(status="waiting_approval"))
        publish_new(c, owner, seen)

    with later(0.5, gate):
        got, elapsed = timed(lambda: c.long_poll.run(owner, run_id, 10))
    assert got.status == "waiting_approval" and 0.5 <= elapsed < 1.5, elapsed
    got, elapsed = timed(lambda: c.long_poll.run(owner, run_id, 10))
    assert got.status == "waiting_approval" and elapsed < 0.5  # already there: at once


def test_a_run_wait_answers_with_the_running_run_after_n(harness: WorkflowHarness) -> None:
    owner = make_user(harness.db)
    make_agent(harness.db, owner)
    workflow = harness.create(owner, {"steps": [
        {"step_id": "check", "agent_type": "validation",
         "input_data": {"schema": {"type": "object"}, "payload": {}}}]})
    run_id = harness.start(owner, workflow)
    got, elapsed = timed(lambda: harness.c.long_poll.run(owner, run_id, 1))
    assert got.status == "running" and 1.0 <= elapsed < 1.8, elapsed


def test_the_hint_pauses_after_a_redis_failure() -> None:
    """A dead Redis costs the consumer one failed publish per breaker period, not one per task."""
    calls: list[str] = []
    now = [100.0]

    class DeadRedis:
        def publish(self, ch: str, body: str) -> int:
            calls.append(ch)
            raise ConnectionError("down")

    wake = live.TaskWake(DeadRedis(), "p:", breaker_seconds=5.0, clock=lambda: now[0])
    owner, task = uuid.uuid4(), uuid.uuid4()
    wake(owner, task, "completed")  # never raises
    wake(owner, task, "completed")
    assert len(calls) == 1
    now[0] += 5.1
    wake(owner, task, "completed")
    assert len(calls) == 2


def test_the_notifier_publishes_a_users_batch_in_order_in_one_round_trip(container: Container) -> None:
    """live.publish_many: the same messages as publish, each event once, in ledger order, one pipeline."""
    import json

    owner, prefix = uuid.uuid4(), container.settings.redis_key_prefix
    events = [ledger.Event(owner, n, "task.status_changed", "task", uuid.uuid4(), None, None, status, utcnow(), {})
              for n, status in enumerate(["queued", "processing", "completed"], start=1)]
    subscription = container.redis.pubsub()
    subscription.subscribe(live.channel(prefix, owner))
    assert subscription.get_message(timeout=1.0)["type"] == "subscribe"
    sent: list[Any] = []
    real_pipeline = container.redis.pipeline
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(container.redis, "pipeline", lambda **kw: (sent.append(p := real_pipeline(**kw)), p)[1])
            live.publish_many(container.redis, prefix, owner, events)
        heard = [subscription.get_message(timeout=1.0) for _ in events]
    finally:
        subscription.close()
    assert len(sent) == 1
    assert [json.loads(m["data"]) for m in heard] == [e.to_json() for e in events]
