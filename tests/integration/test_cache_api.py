"""Caching through the API with real Postgres and Redis: agents and final tasks are served from
the cache, every change is visible at once in every container, ownership holds on cached reads,
a Redis outage degrades to Postgres, and admins can clear namespaces."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from sqlalchemy import event, select, update

from chalicelib.config import Settings
from chalicelib.container import Container, set_container
from chalicelib.db.models import Agent, AuditLog, Task, TaskResult, User
from chalicelib.db.session import Database
from chalicelib.db.types import utcnow
from chalicelib.errors import NotFoundError
from tests.integration.conftest import Api
from tests.integration.test_api_auth import assert_envelope
from tests.integration.test_api_tasks import create_task
from tests.integration.test_consumer import message, run

CLOSED_PORT_URL = "redis://127.0.0.1:1/0"


@contextmanager
def queries_on(db: Database, table: str) -> Iterator[list[str]]:
    """Collect the SQL statements that read or write `table` while the block runs."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if f" {table}" in statement or f"{table}." in statement:
            seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def user_id_of(api: Api, container: Container) -> uuid.UUID:
    assert api.token is not None
    return container.tokens.verify(api.token, "access").user_id


def make_admin(api: Api, db: Database, password: str = "correct horse battery") -> None:
    """Register, promote in the database (the documented bootstrap path), then log in."""
    username = f"admin{uuid.uuid4().hex[:8]}"
    r = api.call("POST", "/auth/register", {"username": username, "email": f"{username}@example.com",
                                            "password": password})
    assert r.status_code == 201, r.json_body
    with db.transaction() as session:
        session.execute(update(User).where(User.username == username).values(role="admin"))
    r = api.call("POST", "/auth/login", {"username": username, "password": password})
    assert r.status_code == 200, r.json_body
    api.token = r.json_body["access_token"]


@pytest.fixture
def second_container(settings: Settings, db: Database) -> Container:
    """Another process's container: same Postgres and Redis, its own L1."""
    return Container(settings, database=db)


# -- agents -----------------------------------------------------------------------------------------


def test_agent_reads_after_the_first_do_not_touch_postgres(api: Api, db: Database) -> None:
    api.signup()
    agent = api.agent()
    with queries_on(db, "agents") as first:
        assert api.call("GET", f"/agents/{agent['id']}").json_body == agent
    with queries_on(db, "agents") as later:
        for _ in range(3):
            assert api.call("GET", f"/agents/{agent['id']}").json_body == agent
    assert len(first) == 1 and later == []


def test_update_is_seen_at_once_by_a_warm_l1_in_another_container(
        api: Api, container: Container, second_container: Container) -> None:
    api.signup()
    agent = api.agent()
    owner = user_id_of(api, container)
    agent_id = uuid.UUID(agent["id"])
    other = second_container.agents
    other.get(owner, agent_id)
    other.get(owner, agent_id)
    assert second_container.cache.stats.l1_hits == 1  # the other container's L1 holds the agent

    for rev in range(1, 4):
        r = api.call("PUT", f"/agents/{agent['id']}", {"name": f"rev-{rev}", "metadata": {"rev": rev}})
        assert r.status_code == 200
        seen = other.get(owner, agent_id)
        assert (seen.name, seen.metadata) == (f"rev-{rev}", {"rev": rev})
        assert api.call("GET", f"/agents/{agent['id']}").json_body["metadata"] == {"rev": rev}


def test_deleted_agent_is_gone_everywhere_at_once(api: Api, container: Container,
                                                  second_container: Container) -> None:
    api.signup()
    agent = api.agent()
    owner, agent_id = user_id_of(api, container), uuid.UUID(agent["id"])
    second_container.agents.get(owner, agent_id)
    assert api.call("GET", f"/agents/{agent['id']}").status_code == 200
    assert api.call("DELETE", f"/agents/{agent['id']}").status_code == 204
    assert_envelope(api.call("GET", f"/agents/{agent['id']}"), 404, "NOT_FOUND")
    with pytest.raises(NotFoundError):
        second_container.agents.get(owner, agent_id)


def test_a_cached_agent_is_still_404_for_another_user(api: Api, other_api: Api) -> None:
    api.signup()
    other_api.signup()
    agent = api.agent()
    api.call("GET", f"/agents/{agent['id']}")
    api.call("GET", f"/agents/{agent['id']}")  # cached in L1 and L2
    error = assert_envelope(other_api.call("GET", f"/agents/{agent['id']}"), 404, "NOT_FOUND")
    assert error["details"] == {"agent_id": agent["id"]}
    assert_envelope(other_api.call("PUT", f"/agents/{agent['id']}", {"name": "mine"}), 404, "NOT_FOUND")
    assert_envelope(create_task(other_api, agent["id"]), 404, "NOT_FOUND")


def test_task_creation_sees_a_deactivated_agent_at_once(api: Api) -> None:
    api.signup()
    agent = api.agent()
    assert create_task(api, agent["id"]).status_code == 202  # the agent record is now cached
    assert api.call("PUT", f"/agents/{agent['id']}", {"status": "inactive"}).status_code == 200
    error = assert_envelope(create_task(api, agent["id"]), 409, "CONFLICT")
    assert error["details"]["status"] == "inactive"


# -- task results -----------------------------------------------------------------------------------


def test_a_finished_task_is_served_from_cache_and_stays_owner_only(api: Api, other_api: Api, db: Database) -> None:
    api.signup()
    other_api.signup()
    task = create_task(api, api.agent()["id"]).json_body
    assert run([("m1", message(task["id"]))]) == {"batchItemFailures": []}
    with queries_on(db, "tasks") as first:
        done = api.call("GET", f"/tasks/{task['id']}").json_body
    assert done["status"] == "completed" and done["result"]["output_data"]["valid"] is True and first
    with queries_on(db, "tasks") as later:
        assert api.call("GET", f"/tasks/{task['id']}").json_body == done
    assert later == []
    error = assert_envelope(other_api.call("GET", f"/tasks/{task['id']}"), 404, "NOT_FOUND")
    assert error["details"] == {"task_id": task["id"]}


def test_unfinished_tasks_are_read_fresh(api: Api) -> None:
    api.signup()
    task = create_task(api, api.agent()["id"]).json_body
    for _ in range(2):
        assert api.call("GET", f"/tasks/{task['id']}").json_body["status"] in ("pending", "queued")
    run([("m1", message(task["id"]))])
    got = api.call("GET", f"/tasks/{task['id']}").json_body
    assert got["status"] == "completed" and got["result"] is not None


def test_a_task_cancelled_while_running_still_shows_the_late_result(api: Api, db: Database) -> None:
    """A consumer that was mid-run when the user cancelled still stores its result; a cached
    'cancelled, no result' snapshot would hide it, so such a task is not cached until it has one."""
    api.signup()
    task = create_task(api, api.agent()["id"]).json_body
    with db.transaction() as session:  # a consumer has claimed it
        session.execute(update(Task).where(Task.id == uuid.UUID(task["id"]))
                        .values(status="processing", started_at=utcnow(), attempts=1))
    assert api.call("POST", f"/tasks/{task['id']}/cancel").json_body["status"] == "cancelled"
    for _ in range(2):
        assert api.call("GET", f"/tasks/{task['id']}").json_body["result"] is None
    with db.transaction() as session:  # ... and its run finishes after the cancel
        session.add(TaskResult(task_id=uuid.UUID(task["id"]), status="completed", output_data={"late": True}))
    got = api.call("GET", f"/tasks/{task['id']}").json_body
    assert got["status"] == "cancelled" and got["result"]["output_data"] == {"late": True}


def test_consumer_reads_the_agent_config_in_its_claim_never_stale(api: Api, db: Database) -> None:
    """Per task the consumer needs the agent's config. It comes with the claim (`UPDATE tasks ... FROM agents
    ... RETURNING agents.config`, one statement per batch), so no separate agent read and no cache that could
    be stale after the agent changes."""
    api.signup()
    agent = api.agent()
    tasks = [create_task(api, agent["id"]).json_body for _ in range(3)]
    with queries_on(db, "agents") as first:
        run([("m1", message(tasks[0]["id"]))])
    assert api.call("PUT", f"/agents/{agent['id']}", {"metadata": {"rev": 2}}).status_code == 200
    with queries_on(db, "agents") as after_update:
        run([("m2", message(tasks[1]["id"])), ("m3", message(tasks[2]["id"]))])
    for seen in (first, after_update):
        assert len(seen) == 1 and seen[0].lstrip().upper().startswith("UPDATE TASKS"), seen  # the claim only
    assert {api.call("GET", f"/tasks/{t['id']}").json_body["status"] for t in tasks} == {"completed"}


# -- Redis outage -----------------------------------------------------------------------------------


def test_redis_down_degrades_to_postgres_with_correct_data(api: Api, settings: Settings, db: Database) -> None:
    api.signup()
    agent = api.agent()
    task = create_task(api, agent["id"]).json_body
    run([("m1", message(task["id"]))])
    api.call("GET", f"/agents/{agent['id']}")
    api.call("GET", f"/tasks/{task['id']}")  # both cached while Redis was up

    down = Container(settings, database=db,
                     redis_client=redis.Redis.from_url(CLOSED_PORT_URL, socket_connect_timeout=0.5))
    set_container(down)
    try:
        assert api.call("GET", f"/agents/{agent['id']}").json_body["name"] == agent["name"]
        assert api.call("PUT", f"/agents/{agent['id']}", {"name": "during-outage"}).status_code == 200
        assert api.call("GET", f"/agents/{agent['id']}").json_body["name"] == "during-outage"
        assert api.call("GET", f"/tasks/{task['id']}").json_body["status"] == "completed"
        assert down.cache.stats.l1_hits == down.cache.stats.l2_hits == 0 and down.cache.stats.bypasses >= 3
    finally:
        set_container(None)


# -- admin clear ------------------------------------------------------------------------------------


def test_admin_clear_makes_every_container_reload(api: Api, other_api: Api, db: Database, container: Container,
                                                  second_container: Container) -> None:
    api.signup()
    agent = api.agent()
    owner, agent_id = user_id_of(api, container), uuid.UUID(agent["id"])
    second_container.agents.get(owner, agent_id)
    with db.engine.begin() as conn:  # a manual SQL fix: no ORM session, so no automatic invalidation
        conn.execute(update(Agent).where(Agent.id == agent_id).values(name="fixed-by-hand"))
    assert second_container.agents.get(owner, agent_id).name == agent["name"]  # cached: not seen yet

    make_admin(other_api, db)
    r = other_api.call("POST", "/admin/cache/clear", {"namespaces": ["agents"]})
    assert r.status_code == 200 and r.json_body == {"cleared": ["agents"]}
    assert second_container.agents.get(owner, agent_id).name == "fixed-by-hand"
    assert api.call("GET", f"/agents/{agent['id']}").json_body["name"] == "fixed-by-hand"
    with db.read() as session:
        row = session.scalar(select(AuditLog).where(AuditLog.event_type == "admin.cache_cleared"))
    assert row is not None and row.details == {"namespaces": ["agents"]} and row.resource_type == "cache"


def test_admin_clear_without_a_body_clears_every_namespace(api: Api, db: Database) -> None:
    make_admin(api, db)
    r = api.call("POST", "/admin/cache/clear")
    assert r.status_code == 200 and r.json_body == {"cleared": ["agents", "task_results", "sessions"]}


def test_cache_clear_is_for_admins_only(api: Api, db: Database) -> None:
    assert_envelope(api.call("POST", "/admin/cache/clear", {}), 401, "AUTHENTICATION_ERROR")
    api.signup()
    error = assert_envelope(api.call("POST", "/admin/cache/clear", {"namespaces": ["agents"]}), 403,
                            "AUTHORIZATION_ERROR")
    assert error["details"] == {"permission": "cache:clear"}
    with db.read() as session:
        assert session.scalar(select(AuditLog).where(AuditLog.event_type == "admin.cache_cleared")) is None


def test_cache_clear_rejects_unknown_or_empty_namespaces(api: Api, db: Database) -> None:
    make_admin(api, db)
    error = assert_envelope(api.call("POST", "/admin/cache/clear", {"namespaces": ["agents", "everything"]}),
                            422, "VALIDATION_ERROR")
    assert error["details"]["unknown"] == ["everything"]
    assert error["details"]["available"] == ["agents", "task_results", "sessions"]
    assert_envelope(api.call("POST", "/admin/cache/clear", {"namespaces": []}), 422, "VALIDATION_ERROR")
    assert_envelope(api.call("POST", "/admin/cache/clear", {"namespace": "agents"}), 422, "VALIDATION_ERROR")
    assert_envelope(api.call("POST", "/admin/cache/clear", raw="{nope"), 400, "BAD_REQUEST")


def test_cache_clear_with_redis_down_is_503_and_not_audited(api: Api, settings: Settings, db: Database) -> None:
    make_admin(api, db)
    set_container(Container(settings, database=db,
                            redis_client=redis.Redis.from_url(CLOSED_PORT_URL, socket_connect_timeout=0.5)))
    try:
        assert_envelope(api.call("POST", "/admin/cache/clear"), 503, "DEPENDENCY_UNAVAILABLE")
    finally:
        set_container(None)
    with db.read() as session:
        assert session.scalar(select(AuditLog).where(AuditLog.event_type == "admin.cache_cleared")) is None
