"""The event ledger's triggers and Python API against real Postgres (chalicelib/events; docs/events.md)."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import select, text, update

from chalicelib.db.event_models import EventCounter
from chalicelib.db.models import Task
from chalicelib.db.session import Database
from chalicelib.db.types import utcnow
from chalicelib.db.workflow_models import RunStep, Workflow, WorkflowRun, WorkflowVersion
from chalicelib.events import ledger
from chalicelib.events.ledger import Event
from chalicelib.events.triggers import NOTIFY_CHANNEL
from tests.integration.conftest import Api
from tests.integration.test_api_tasks import SCHEMA_TASK, create_task
from tests.integration.test_consumer import message, run
from tests.integration.worker_helpers import user_id
from tests.integration.workflow_support import WorkflowHarness, harness, make_agent, make_user, wf_aws, wf_container

__all__ = ["harness", "wf_aws", "wf_container"]


def events_of(db: Database, owner: uuid.UUID, after: int = 0) -> list[Event]:
    with db.read() as session:
        return ledger.list_after(session, owner, after, 500)


def add_tasks(db: Database, owner: uuid.UUID, n: int, status: str = "queued") -> list[uuid.UUID]:
    agent = make_agent(db, owner)
    with db.transaction() as session:
        tasks = [Task(user_id=owner, agent_id=agent, agent_type="validation", title=f"t{i}", status=status,
                      input_data={}) for i in range(n)]
        session.add_all(tasks)
        session.flush()
        return [t.id for t in tasks]


def last_event_id(db: Database, owner: uuid.UUID) -> int:
    with db.read() as session:
        return int(session.scalar(select(EventCounter.last_event_id).where(EventCounter.user_id == owner)) or 0)


def test_creating_a_task_through_the_service_writes_a_pending_event(api: Api, db: Database) -> None:
    me = api.signup()
    task = create_task(api, api.agent()["id"]).json_body
    events = events_of(db, user_id(db, me["username"]))
    first = events[0]
    assert (first.event_id, first.type, first.status) == (1, "task.status_changed", "pending")
    assert first.to_json() == {
        "event_id": 1, "type": "task.status_changed", "resource": {"type": "task", "id": task["id"]},
        "run_id": None, "step_id": None, "status": "pending",
        "occurred_at": first.occurred_at.isoformat().replace("+00:00", "Z"),
        "payload": {"agent_type": "validation", "agent_id": task["agent_id"], "title": "check"}}
    # Publishing moved it to queued after the commit: the next event, numbered next.
    assert [(e.event_id, e.status) for e in events] == [(1, "pending"), (2, "queued")]


def test_the_consumer_writes_processing_then_completed_with_consecutive_ids(api: Api, db: Database) -> None:
    me = api.signup()
    task = create_task(api, api.agent()["id"]).json_body
    owner = user_id(db, me["username"])
    before = last_event_id(db, owner)
    assert run([("m1", message(task["id"]))]) == {"batchItemFailures": []}
    new = events_of(db, owner, before)
    assert [(e.event_id, e.status, e.payload.get("previous_status")) for e in new] == [
        (before + 1, "processing", "queued"), (before + 2, "completed", "processing")]
    assert {str(e.resource_id) for e in new} == {task["id"]}


def test_a_failed_task_carries_its_error_code(api: Api, db: Database) -> None:
    me = api.signup()
    task = create_task(api, api.agent()["id"], input_data={"schema": {"type": "nonsense"}, "payload": 1}).json_body
    run([("m1", message(task["id"]))])
    last = events_of(db, user_id(db, me["username"]))[-1]
    assert (last.status, last.payload["error_code"]) == ("failed", "AGENT_INPUT_INVALID")


def test_an_update_without_a_status_change_writes_nothing(db: Database) -> None:
    owner = make_user(db)
    ids = add_tasks(db, owner, 2)
    with db.transaction() as session:
        session.execute(update(Task).where(Task.id.in_(ids)).values(lease_expires_at=utcnow(), status=Task.status))
    assert [e.event_id for e in events_of(db, owner)] == [1, 2]


def test_a_multi_user_update_numbers_each_users_events_gap_free(db: Database) -> None:
    users = [make_user(db) for _ in range(3)]
    tasks = {u: add_tasks(db, u, 1 + i * 2) for i, u in enumerate(users)}  # 1, 3 and 5 tasks, 1-5 events
    with db.transaction() as session:  # one statement, every user's tasks
        session.execute(update(Task).values(status="processing"))
    for u in users:
        events = events_of(db, u)
        n = len(tasks[u])
        assert [e.event_id for e in events] == list(range(1, 2 * n + 1))
        assert [e.status for e in events] == ["queued"] * n + ["processing"] * n
        assert {e.resource_id for e in events[n:]} == set(tasks[u])
        assert last_event_id(db, u) == 2 * n


def test_a_rolled_back_transaction_writes_nothing_and_uses_no_number(db: Database) -> None:
    owner = make_user(db)
    [task] = add_tasks(db, owner, 1)
    with pytest.raises(RuntimeError), db.transaction() as session:
        session.execute(update(Task).where(Task.id == task).values(status="processing"))
        assert last_event_id_in(session, owner) == 2  # written, inside the transaction
        raise RuntimeError("roll it back")
    assert [e.event_id for e in events_of(db, owner)] == [1] and last_event_id(db, owner) == 1
    with db.transaction() as session:
        session.execute(update(Task).where(Task.id == task).values(status="completed"))
    assert [(e.event_id, e.status) for e in events_of(db, owner)] == [(1, "queued"), (2, "completed")]


def last_event_id_in(session: Any, owner: uuid.UUID) -> int:
    return int(session.scalar(select(EventCounter.last_event_id).where(EventCounter.user_id == owner)))


def test_a_task_whose_create_transaction_fails_leaves_no_event(api: Api, db: Database, container: Any) -> None:
    from chalicelib.schemas.tasks import TaskCreate
    from chalicelib.services.audit import RequestMeta

    me = api.signup()
    agent = api.agent()
    owner = user_id(db, me["username"])

    def refuse(session: Any, task: Task) -> None:
        raise RuntimeError("the caller's receipt could not be written")

    req = TaskCreate.model_validate({"agent_id": agent["id"], "title": "x", "input_data": SCHEMA_TASK})
    with pytest.raises(RuntimeError):
        container.tasks.create(owner, req, RequestMeta(), on_created=refuse)
    assert events_of(db, owner) == [] and last_event_id(db, owner) == 0


def test_concurrent_transactions_of_one_user_never_leave_a_gap_or_a_duplicate(db: Database) -> None:
    owner = make_user(db)
    ids = add_tasks(db, owner, 40, status="pending")
    start = threading.Barrier(4)

    def worker(mine: list[uuid.UUID]) -> None:
        start.wait()
        for task in mine:
            with db.transaction() as session:
                session.execute(update(Task).where(Task.id == task).values(status="queued"))
                time.sleep(0.002)  # hold the counter a moment: the others queue up behind it
                session.execute(update(Task).where(Task.id == task).values(status="processing"))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(worker, [ids[i::4] for i in range(4)]))
    events = events_of(db, owner)
    assert [e.event_id for e in events] == list(range(1, 121))  # 40 inserts + 80 changes
    assert last_event_id(db, owner) == 120
    # ids follow commit order: each task's queued comes right before its processing (one transaction).
    changes = events[40:]
    assert all(a.resource_id == b.resource_id and (a.status, b.status) == ("queued", "processing")
               for a, b in zip(changes[::2], changes[1::2], strict=True))


def test_a_second_writer_of_the_same_user_waits_for_the_first_to_commit(db: Database) -> None:
    owner = make_user(db)
    first, second = add_tasks(db, owner, 2)
    holding, done = threading.Event(), threading.Event()
    order: list[str] = []

    def slow() -> None:
        with db.transaction() as session:
            session.execute(update(Task).where(Task.id == first).values(status="processing"))
            holding.set()
            time.sleep(0.3)
            order.append("first commits")

    thread = threading.Thread(target=slow)
    thread.start()
    holding.wait(5)
    with db.transaction() as session:
        session.execute(update(Task).where(Task.id == second).values(status="processing"))
        order.append("second numbered")
    done.set()
    thread.join(5)
    assert order == ["first commits", "second numbered"]
    assert [(e.event_id, e.resource_id) for e in events_of(db, owner, 2)] == [(3, first), (4, second)]


def make_run(db: Database, owner: uuid.UUID, steps: list[str]) -> uuid.UUID:
    with db.transaction() as session:
        wf = Workflow(user_id=owner, name="wf")
        session.add(wf)
        session.flush()
        version = WorkflowVersion(workflow_id=wf.id, version=1, definition={}, asl={})
        session.add(version)
        session.flush()
        run_row = WorkflowRun(user_id=owner, workflow_id=wf.id, version_id=version.id, status="running")
        session.add(run_row)
        session.flush()
        session.add_all([RunStep(run_id=run_row.id, step_id=s, status="pending") for s in steps])
        return run_row.id


def test_run_and_step_changes_and_approval_requests_are_written(db: Database) -> None:
    owner, other = make_user(db), make_user(db)
    run_id = make_run(db, owner, ["a", "gate"])
    make_run(db, other, ["x"])
    with db.transaction() as session:
        session.execute(update(RunStep).where(RunStep.run_id == run_id, RunStep.step_id == "a")
                        .values(status="succeeded"))
        session.execute(update(RunStep).where(RunStep.run_id == run_id, RunStep.step_id == "gate")
                        .values(status="waiting_approval"))
        session.execute(update(WorkflowRun).where(WorkflowRun.id == run_id).values(status="waiting_approval"))
    with db.transaction() as session:  # every step of every run in one statement: only changed rows count
        session.execute(update(RunStep).values(status=text("CASE WHEN step_id = 'gate' THEN 'succeeded' "
                                                           "ELSE status END")))
    with db.read() as session:
        workflow_id = session.scalar(select(WorkflowRun.workflow_id).where(WorkflowRun.id == run_id))
    got = [(e.event_id, e.type, e.resource_type, e.step_id, e.status) for e in events_of(db, owner)]
    assert got == [
        (1, "run.status_changed", "run", None, "running"),  # the insert; the pending steps write nothing
        (2, "run.step_changed", "step", "a", "succeeded"),
        (3, "run.step_changed", "step", "gate", "waiting_approval"),
        (4, "run.approval_requested", "step", "gate", "waiting_approval"),
        (5, "run.status_changed", "run", None, "waiting_approval"),
        (6, "run.step_changed", "step", "gate", "succeeded"),
    ]
    events = events_of(db, owner)
    assert all(e.run_id == run_id and e.resource_id == run_id for e in events)
    assert events[2].payload == {"workflow_id": str(workflow_id), "previous_status": "pending"}
    assert [e.event_id for e in events_of(db, other)] == [1]


def listen(pg_url: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
    return conn


def notifications(conn: psycopg.Connection[Any], timeout: float = 0.5) -> list[str]:
    return [n.payload for n in conn.notifies(timeout=timeout)]


def test_notify_names_the_users_at_commit_and_never_for_a_rollback(db: Database, pg_url: str) -> None:
    a, b = sorted([make_user(db), make_user(db)])
    add_tasks(db, a, 1)
    add_tasks(db, b, 1)
    conn = listen(pg_url)
    try:
        with pytest.raises(RuntimeError), db.transaction() as session:
            session.execute(update(Task).values(status="processing"))
            raise RuntimeError("roll it back")
        assert notifications(conn) == []
        with db.transaction() as session:
            session.execute(update(Task).values(status="processing"))
        assert notifications(conn) == [f"{a},{b}"]
    finally:
        conn.close()


def test_append_numbers_after_trigger_events_and_notifies(db: Database, pg_url: str) -> None:
    owner = make_user(db)
    add_tasks(db, owner, 2)
    conn = listen(pg_url)
    try:
        hook = uuid.uuid4()
        with db.transaction() as session:
            event = ledger.append(session, owner, "webhook.disabled", "webhook", hook, "disabled",
                                  {"reason": "failing"})
        assert notifications(conn) == [str(owner)]
    finally:
        conn.close()
    assert (event.event_id, event.resource_id, event.payload) == (3, hook, {"reason": "failing"})
    assert events_of(db, owner, 2) == [event]


def test_pending_users_and_the_delivery_cursor(db: Database) -> None:
    a, b = make_user(db), make_user(db)
    add_tasks(db, a, 3)
    add_tasks(db, b, 1)
    with db.read() as session:
        assert sorted(ledger.pending_users(session, 10)) == sorted([(a, 0, 3), (b, 0, 1)])
    with db.transaction() as session:
        assert ledger.advance(session, a, 0, 3) is True
        assert ledger.advance(session, b, 0, 2) is False  # past the last event
        assert ledger.advance(session, b, 1, 1) is False  # stale from_id: someone else moved it (or not)
    with db.transaction() as session:
        assert ledger.advance(session, a, 0, 3) is False  # a duplicate notifier lost the race
        assert ledger.pending_users(session, 10) == [(b, 0, 1)]


def test_the_sweep_reads_only_pending_users_however_many_are_delivered(db: Database) -> None:
    # GIVEN 20,000 users whose events were all delivered, and 3 with events pending
    import json

    from sqlalchemy import insert

    from chalicelib.db.models import User

    users = [{"id": uuid.uuid4(), "username": f"s{uuid.uuid4().hex[:12]}", "password_hash": "x"} for _ in range(20_003)]
    for u in users:
        u["email"] = f"{u['username']}@example.com"
    now = utcnow()
    with db.transaction() as s:
        s.execute(insert(User), users)
        s.execute(insert(EventCounter), [{"user_id": u["id"], "last_event_id": 5,
                                          "delivered_event_id": 5 if i >= 3 else 2, "updated_at": now}
                                         for i, u in enumerate(users)])
    with db.engine.connect() as conn:
        conn.execute(text("ANALYZE event_counters"))
        stmt = select(EventCounter.user_id).where(EventCounter.last_event_id > EventCounter.delivered_event_id
                                                  ).order_by(EventCounter.updated_at).limit(100)
        compiled = stmt.compile(conn, compile_kwargs={"literal_binds": True})
        plan = conn.execute(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {compiled}")).scalar()
    # THEN the sweep's query scans the partial index and reads just those 3 rows
    root = (plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]
    scans, stack = [], [root]
    while stack:
        node = stack.pop()
        stack.extend(node.get("Plans", []))
        if "Scan" in node["Node Type"]:
            scans.append(node)
    assert [n.get("Index Name") for n in scans] == ["ix_event_counters_pending_updated_at"], scans
    assert scans[0]["Actual Rows"] == 3 and scans[0].get("Rows Removed by Filter", 0) == 0, scans
    with db.read() as session:
        assert sorted(u for u, _, _ in ledger.pending_users(session, 100)) == sorted(u["id"] for u in users[:3])


def test_purge_deletes_old_events_only_and_ids_keep_counting(db: Database) -> None:
    owner = make_user(db)
    [task] = add_tasks(db, owner, 3)[:1]
    with db.transaction() as session:
        session.execute(text("UPDATE events SET occurred_at = now() - interval '8 days' WHERE event_id <= 2"))
    with db.transaction() as session:
        assert ledger.purge(session, utcnow() - timedelta(days=7), batch=1) == 1
        assert ledger.purge(session, utcnow() - timedelta(days=7)) == 1
    assert [e.event_id for e in events_of(db, owner)] == [3]
    with db.transaction() as session:
        session.execute(update(Task).where(Task.id == task).values(status="processing"))
    assert [e.event_id for e in events_of(db, owner)] == [3, 4]


def test_a_real_run_with_an_approval_writes_its_story_in_order(harness: WorkflowHarness) -> None:
    owner = make_user(harness.db)
    make_agent(harness.db, owner)
    workflow = harness.create(owner, {"steps": [
        {"step_id": "check", "agent_type": "validation", "input_data": {"schema": {"type": "object"}, "payload": {}}},
        {"step_id": "gate", "type": "approval", "depends_on": ["check"]}]})
    run_id = harness.start(owner, workflow)
    harness.drive(lambda: harness.steps(run_id)["gate"].status == "waiting_approval")
    harness.drive(lambda: harness.status(run_id) == "waiting_approval")
    harness.approve(run_id, "gate")
    harness.drive(lambda: harness.status(run_id) == "succeeded")
    events = events_of(harness.db, owner)
    assert [e.event_id for e in events] == list(range(1, len(events) + 1))
    assert all(e.run_id == run_id for e in events)
    story = [(e.type, e.step_id, e.status) for e in events if e.type != "task.status_changed"]
    assert story[0] == ("run.status_changed", None, "running")
    assert story[-1] == ("run.status_changed", None, "succeeded")
    # the gate's approval request right after its step change, and before the run says it waits
    gate = story.index(("run.step_changed", "gate", "waiting_approval"))
    assert story[gate + 1] == ("run.approval_requested", "gate", "waiting_approval")
    assert story.index(("run.status_changed", None, "waiting_approval")) > gate
    assert ("run.step_changed", "check", "succeeded") in story[:gate]
    assert ("run.step_changed", "gate", "succeeded") in story[gate:]
    # the step's task, tagged with its run and step
    task_story = [(e.step_id, e.status) for e in events if e.type == "task.status_changed"]
    assert task_story[-1] == ("check", "completed") and ("check", "processing") in task_story


def test_append_and_the_cursor_work_on_sqlite_which_has_no_triggers(tmp_path: Any) -> None:
    from chalicelib.db.migrate import upgrade
    from chalicelib.db.session import make_engine

    url = f"sqlite:///{tmp_path / 'e.db'}"
    upgrade(url)
    lite = Database(make_engine(url))
    owner = make_user(lite)
    add_tasks(lite, owner, 1)  # no trigger: no event
    hooks = [uuid.uuid4(), uuid.uuid4()]
    for hook in hooks:
        with lite.transaction() as session:
            ledger.append(session, owner, "webhook.disabled", "webhook", hook, "disabled", {"reason": "x"})
    got = events_of(lite, owner)
    assert [(e.event_id, e.resource_id) for e in got] == [(1, hooks[0]), (2, hooks[1])]
    assert got[0].to_json()["resource"] == {"type": "webhook", "id": str(hooks[0])}
    with lite.transaction() as session:
        assert ledger.pending_users(session, 5) == [(owner, 0, 2)]
        assert ledger.advance(session, owner, 0, 2) is True
    lite.engine.dispose()
