"""Leases on real Postgres: long polling, concurrent leases, heartbeats, expiry and re-delivery."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from chalicelib.config import Settings
from chalicelib.container import Container, set_container
from chalicelib.db.models import Agent, Task
from chalicelib.schemas.tasks import TaskCreate
from chalicelib.services.meta import RequestMeta
from functions.lease_reaper import handler as reaper
from tests.integration.conftest import Api, FakeContext
from tests.integration.test_api_auth import assert_envelope
from tests.integration.worker_helpers import SCHEMA_INPUT, external_agent, new_task, user_id


def make_tasks(container: Container, owner: uuid.UUID, agent_id: str, n: int) -> list[str]:
    req = TaskCreate(agent_id=uuid.UUID(agent_id), title="t", input_data=SCHEMA_INPUT)
    return [str(container.tasks.create(owner, req, RequestMeta()).id) for _ in range(n)]


@pytest.fixture
def short_leases(container: Container, settings: Settings, db: Any) -> Iterator[Container]:
    """The app with 1-second leases and two attempts per task."""
    short = Container(settings.model_copy(update={"lease_seconds": 1, "max_task_attempts": 2}), database=db)
    set_container(short)
    yield short
    set_container(container)


def test_long_poll_returns_as_soon_as_a_task_arrives(api: Api, container: Container, db: Any) -> None:
    me = api.signup()
    agent, worker = external_agent(api)
    started = time.monotonic()
    assert worker.lease(wait_seconds=1).json_body["tasks"] == []  # nothing came: empty after the wait
    assert 0.9 <= time.monotonic() - started < 3

    got: dict[str, Any] = {}

    def poll() -> None:
        t0 = time.monotonic()
        got["tasks"] = container.leases.lease(uuid.UUID(agent["id"]), 1, 15).tasks
        got["waited"] = time.monotonic() - t0

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(1.0)
    [task_id] = make_tasks(container, user_id(db, me["username"]), agent["id"], 1)
    poller.join(timeout=20)
    assert [str(t.id) for t in got["tasks"]] == [task_id]
    assert 1.0 <= got["waited"] < 2.5  # the poll interval is 0.5 s; nowhere near the 15 s wait


def test_concurrent_leases_never_hand_out_a_task_twice(api: Api, container: Container, db: Any) -> None:
    me = api.signup()
    agent, _ = external_agent(api, max_concurrency=1000)
    all_ids = make_tasks(container, user_id(db, me["username"]), agent["id"], 60)
    barrier = threading.Barrier(8)
    leased: list[str] = []
    lock = threading.Lock()

    def lease_until_empty() -> None:
        barrier.wait()
        while batch := container.leases.lease(uuid.UUID(agent["id"]), 3, 0).tasks:
            with lock:
                leased.extend(str(t.id) for t in batch)

    threads = [threading.Thread(target=lease_until_empty) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    duplicates = [tid for tid, n in Counter(leased).items() if n > 1]
    assert duplicates == [] and sorted(leased) == sorted(all_ids)
    with db.read() as session:
        assert set(session.scalars(select(Task.attempts))) == {1}


def test_concurrent_leases_respect_max_concurrency(api: Api, container: Container, db: Any) -> None:
    me = api.signup()
    agent, _ = external_agent(api, max_concurrency=5)
    make_tasks(container, user_id(db, me["username"]), agent["id"], 30)
    barrier = threading.Barrier(8)
    counts: list[int] = []

    def lease_once() -> None:
        barrier.wait()
        counts.append(len(container.leases.lease(uuid.UUID(agent["id"]), 10, 0).tasks))

    threads = [threading.Thread(target=lease_once) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sum(counts) == 5


def test_heartbeat_extends_leases_so_the_reaper_spares_them(api: Api, container: Container) -> None:
    api.signup()
    agent, worker = external_agent(api)
    task = new_task(api, agent_id=agent["id"]).json_body
    first = datetime.fromisoformat(worker.lease().json_body["tasks"][0]["lease_expires_at"])
    time.sleep(0.05)
    r = worker.heartbeat()
    assert r.status_code == 200
    [info] = r.json_body["tasks"]
    extended = datetime.fromisoformat(info["lease_expires_at"])
    assert info["task_id"] == task["id"] and extended > first

    assert container.leases.reap(now=first + (extended - first) / 2).requeued == 0  # would have expired
    assert api.call("GET", f"/tasks/{task['id']}").json_body["status"] == "processing"
    assert container.leases.reap(now=extended + timedelta(milliseconds=1)).requeued == 1
    assert api.call("GET", f"/tasks/{task['id']}").json_body["status"] == "queued"
    assert worker.heartbeat().json_body["tasks"] == []  # it holds nothing any more


def test_expired_lease_is_redelivered_then_fails_after_the_attempt_limit(api: Api, short_leases: Container,
                                                                         db: Any) -> None:
    api.signup()
    agent, worker = external_agent(api)
    task = new_task(api, agent_id=agent["id"]).json_body
    assert worker.lease().json_body["tasks"][0]["attempts"] == 1
    time.sleep(1.1)  # no heartbeat: the 1-second lease passes
    assert reaper({}, FakeContext()) == {"requeued": 1, "failed": 0, "cancelled": 0}
    requeued = api.call("GET", f"/tasks/{task['id']}").json_body
    assert requeued["status"] == "queued" and requeued["attempts"] == 1

    again = worker.lease().json_body["tasks"]
    assert [(t["id"], t["attempts"]) for t in again] == [(task["id"], 2)]
    # The first lease's late result is refused: the task was handed out again.
    assert_envelope(worker.complete(task["id"], {"late": True}, attempt=1), 409, "LEASE_NOT_HELD")

    time.sleep(1.1)
    assert reaper({}, FakeContext()) == {"requeued": 0, "failed": 1, "cancelled": 0}
    failed = api.call("GET", f"/tasks/{task['id']}").json_body
    assert failed["status"] == "failed" and failed["error"]["code"] == "LEASE_EXPIRED"
    assert failed["error"]["details"]["attempts"] == 2 and failed["result"]["status"] == "failed"
    assert worker.lease().json_body["tasks"] == []


def test_each_lease_call_reaps_first(api: Api, short_leases: Container) -> None:
    api.signup()
    agent, worker = external_agent(api)
    task = new_task(api, agent_id=agent["id"]).json_body
    worker.lease()
    time.sleep(1.1)
    # No scheduled reaper ran: the next lease takes the expired task back and hands it out again.
    assert [(t["id"], t["attempts"]) for t in worker.lease().json_body["tasks"]] == [(task["id"], 2)]


def test_a_deleted_agents_expired_tasks_are_cancelled_not_requeued(api: Api, short_leases: Container) -> None:
    api.signup()
    agent, worker = external_agent(api)
    task = new_task(api, agent_id=agent["id"]).json_body
    worker.lease()
    api.call("DELETE", f"/agents/{agent['id']}")
    time.sleep(1.1)
    assert reaper({}, FakeContext())["cancelled"] == 1
    gone = api.call("GET", f"/tasks/{task['id']}").json_body
    assert gone["status"] == "cancelled" and gone["error"]["code"] == "AGENT_DELETED"


def test_heartbeat_brings_an_offline_agent_back(api: Api, db: Any) -> None:
    api.signup()
    agent, worker = external_agent(api)
    assert api.call("GET", f"/agents/{agent['id']}").json_body["last_heartbeat"] is None  # now cached
    worker.heartbeat()
    assert api.call("GET", f"/agents/{agent['id']}").json_body["last_heartbeat"] is not None  # not stale
    with db.transaction() as session:  # what monitoring does to an agent with a stale heartbeat
        session.execute(update(Agent).values(status="offline"))
    assert api.call("GET", f"/agents/{agent['id']}/status").json_body["status"] == "offline"
    assert worker.heartbeat().status_code == 200
    assert api.call("GET", f"/agents/{agent['id']}").json_body["status"] == "active"
    assert new_task(api, agent_id=agent["id"]).status_code == 202
