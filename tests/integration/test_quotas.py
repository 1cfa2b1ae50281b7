"""Per-user quotas through the API: agents per user, tasks per user per UTC day, agent metadata/config size."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, text, update

from chalicelib.config import Settings
from chalicelib.container import Container, set_container
from chalicelib.db.models import Task
from chalicelib.db.session import Database
from chalicelib.db.types import utcnow
from chalicelib.services.quotas import canonical_size, tasks_since
from tests.integration.conftest import Api
from tests.integration.test_api_auth import assert_envelope
from tests.integration.test_api_tasks import create_task

QUOTAS = {"quota_agents_per_user": 3, "quota_tasks_per_user_per_day": 3, "quota_agent_json_bytes": 200}


@pytest.fixture
def quota_api(settings: Settings, db: Database, aws: Any) -> Iterator[tuple[Api, Container]]:
    from chalice.test import Client

    from app import app

    container = Container(settings.model_copy(update=QUOTAS), database=db)
    set_container(container)
    with Client(app) as client:
        yield Api(client), container
    set_container(None)


def test_agents_per_user_is_409_quota_exceeded_and_a_delete_frees_a_slot(
        quota_api: tuple[Api, Container]) -> None:
    api, _ = quota_api
    api.signup()
    agents = [api.agent(name=f"a{i}") for i in range(3)]
    error = assert_envelope(api.call("POST", "/agents", {"name": "a3", "type": "validation"}), 409, "QUOTA_EXCEEDED")
    assert error["details"] == {"quota": "agents_per_user", "limit": 3, "used": 3}
    assert api.call("DELETE", f"/agents/{agents[0]['id']}").status_code == 204
    assert api.call("POST", "/agents", {"name": "a3", "type": "validation"}).status_code == 201
    other = Api(api.client)
    other.signup()
    assert other.call("POST", "/agents", {"name": "theirs", "type": "validation"}).status_code == 201


def test_concurrent_creates_cannot_share_the_last_agent_slot(quota_api: tuple[Api, Container]) -> None:
    api, _ = quota_api
    api.signup()
    start = threading.Barrier(8)
    statuses: list[int] = []

    def create(i: int) -> None:
        start.wait()
        statuses.append(api.call("POST", "/agents", {"name": f"c{i}", "type": "validation"}).status_code)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201] * 3 + [409] * 5


def test_tasks_per_user_per_day_is_429_until_the_next_utc_day(quota_api: tuple[Api, Container], db: Database) -> None:
    api, container = quota_api
    container.relay.publisher = type("Null", (), {"publish": lambda self, d, m: set()})()
    api.signup()
    agent = api.agent()

    def post() -> Any:
        return create_task(api, agent["id"])

    first = post()
    assert first.status_code == 202, first.json_body
    # Yesterday's tasks do not count.
    with db.transaction() as session:
        session.execute(update(Task).where(Task.id == uuid.UUID(first.json_body["id"]))
                        .values(created_at=utcnow() - timedelta(days=1)))
    assert [post().status_code for _ in range(3)] == [202] * 3
    refused = post()
    error = assert_envelope(refused, 429, "QUOTA_EXCEEDED")
    assert error["details"]["quota"] == "tasks_per_user_per_day" and error["details"]["used"] == 3
    assert 0 < int(refused.headers["Retry-After"]) <= 86400
    other = Api(api.client)
    other.signup()
    theirs = other.agent()
    assert create_task(other, theirs["id"]).status_code == 202


def test_tasks_today_is_one_indexed_statement(db: Database) -> None:
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    with db.read() as session:
        session.execute(text("SET LOCAL enable_seqscan = off"))
        stmt = tasks_since(uuid.uuid4(), utcnow())
        event.listen(db.engine, "before_cursor_execute", record)
        try:
            assert session.scalar(stmt) == 0
        finally:
            event.remove(db.engine, "before_cursor_execute", record)
        compiled = stmt.compile(db.engine, compile_kwargs={"literal_binds": True})
        plan = "\n".join(session.execute(text(f"EXPLAIN {compiled}")).scalars())
    assert len(statements) == 1
    # An index on (user_id, ..., created_at) answers it (with seq scans off, a plan without one would say Seq Scan).
    assert "Index Only Scan using ix_tasks_user_id_" in plan and "Seq Scan" not in plan, plan


def test_metadata_and_config_over_the_size_limit_are_422(quota_api: tuple[Api, Container]) -> None:
    api, _ = quota_api
    api.signup()
    big = {"notes": "x" * 200}
    for field in ("metadata", "config"):
        body = {"name": "big", "type": "validation", field: big}
        error = assert_envelope(api.call("POST", "/agents", body), 422, "FIELD_TOO_LARGE")
        assert error["details"]["field"] == field and error["details"]["limit_bytes"] == 200
    agent = api.agent()
    error = assert_envelope(api.call("PUT", f"/agents/{agent['id']}", {"metadata": big}), 422, "FIELD_TOO_LARGE")
    assert error["details"]["bytes"] == canonical_size(big)
    # Measured as canonical JSON: the client's whitespace does not count.
    fits = {"k": "y" * 150}
    raw = json.dumps({"metadata": fits}, indent=40)
    assert len(raw) > 200
    assert api.call("PUT", f"/agents/{agent['id']}", raw=raw).status_code == 200
