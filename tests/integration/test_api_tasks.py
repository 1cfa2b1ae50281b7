"""Tasks over the API: create (task + outbox), read, list with filters, cancel, ownership."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import event, func, select

from chalicelib.db.models import OutboxMessage, Task
from tests.integration.conftest import PREFIX, Api
from tests.integration.test_api_auth import assert_envelope

SCHEMA_TASK = {"schema": {"type": "object", "required": ["name"]}, "payload": {"name": "x"}}


def create_task(api: Api, agent_id: str, **overrides: Any) -> Any:
    body = {"agent_id": agent_id, "title": "check", "input_data": SCHEMA_TASK, **overrides}
    return api.call("POST", "/tasks", body)


def receive_all(sqs: Any, agent_type: str = "validation") -> list[dict[str, Any]]:
    url = sqs.get_queue_url(QueueName=f"{PREFIX}-agent-{agent_type}")["QueueUrl"]
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"]) for m in messages]


def test_create_task_is_202_with_location_and_is_published(api: Api, aws: Any, db: Any) -> None:
    api.signup()
    agent = api.agent()
    r = create_task(api, agent["id"], priority="high", description="does it validate?")
    assert r.status_code == 202
    task = r.json_body
    assert r.headers["Location"] == f"/tasks/{task['id']}"
    assert task["status"] == "pending" and task["priority"] == "high" and task["result"] is None
    assert receive_all(aws) == [{"task_id": task["id"], "agent_type": "validation"}]
    with db.read() as session:
        row = session.scalar(select(OutboxMessage))
        assert row is not None and row.published_at is not None
        assert session.scalar(select(Task.status)) == "queued"
    assert api.call("GET", f"/tasks/{task['id']}").json_body["status"] == "queued"


def test_sqs_unreachable_still_accepts_and_the_relay_publishes_later(api: Api, container: Any, aws: Any,
                                                                    db: Any) -> None:
    class Down:
        def publish(self, destination: str, messages: Any) -> set[str]:
            raise ConnectionError("sqs is down")

    real = container.relay.publisher
    container.relay.publisher = Down()
    api.signup()
    agent = api.agent()
    r = create_task(api, agent["id"])
    assert r.status_code == 202
    assert receive_all(aws) == []
    with db.read() as session:
        row = session.scalar(select(OutboxMessage))
        assert row.published_at is None and row.attempts == 1 and "sqs is down" in row.last_error

    container.relay.publisher = real  # SQS is back: the scheduled relay drains the outbox
    from functions.outbox_relay import handler
    from tests.integration.conftest import FakeContext

    assert handler({}, FakeContext()) == {"published": 1, "failed": 0}
    assert receive_all(aws) == [{"task_id": r.json_body["id"], "agent_type": "validation"}]
    assert handler({}, FakeContext()) == {"published": 0, "failed": 0}


def test_task_input_is_checked_against_the_agent_type(api: Api) -> None:
    api.signup()
    agent = api.agent()
    error = assert_envelope(create_task(api, agent["id"], input_data={"payload": 1}), 422, "VALIDATION_ERROR")
    assert error["details"]["errors"][0]["loc"] == ["input_data", "schema"]


def test_bad_task_bodies(api: Api) -> None:
    api.signup()
    agent = api.agent()
    assert_envelope(api.call("POST", "/tasks", raw="{not json"), 400, "BAD_REQUEST")
    error = assert_envelope(create_task(api, agent["id"], priority="urgent", title=7, colour="red"),
                            422, "VALIDATION_ERROR")
    assert {tuple(e["loc"]) for e in error["details"]["errors"]} == {("priority",), ("title",), ("colour",)}
    assert_envelope(create_task(api, "not-a-uuid"), 422, "VALIDATION_ERROR")


def test_task_for_missing_inactive_or_foreign_agent(api: Api, other_api: Api) -> None:
    api.signup()
    mine = api.agent()
    assert_envelope(create_task(api, str(uuid.uuid4())), 404, "NOT_FOUND")
    other_api.signup()
    assert_envelope(create_task(other_api, mine["id"]), 404, "NOT_FOUND")
    api.call("PUT", f"/agents/{mine['id']}", {"status": "inactive"})
    assert_envelope(create_task(api, mine["id"]), 409, "CONFLICT")


def test_other_users_tasks_are_invisible(api: Api, other_api: Api) -> None:
    api.signup()
    task = create_task(api, api.agent()["id"]).json_body
    other_api.signup()
    assert_envelope(other_api.call("GET", f"/tasks/{task['id']}"), 404, "NOT_FOUND")
    assert_envelope(other_api.call("POST", f"/tasks/{task['id']}/cancel"), 404, "NOT_FOUND")
    assert other_api.call("GET", "/tasks").json_body["items"] == []
    assert [t["id"] for t in api.call("GET", "/tasks").json_body["items"]] == [task["id"]]


def test_cancel_moves_forward_only(api: Api) -> None:
    api.signup()
    task = create_task(api, api.agent()["id"]).json_body
    r = api.call("POST", f"/tasks/{task['id']}/cancel")
    assert r.status_code == 200 and r.json_body["status"] == "cancelled" and r.json_body["completed_at"]
    error = assert_envelope(api.call("POST", f"/tasks/{task['id']}/cancel"), 409, "CONFLICT")
    assert error["details"] == {"status": "cancelled"}


def test_deleting_an_agent_cancels_its_waiting_tasks(api: Api) -> None:
    api.signup()
    agent = api.agent()
    task = create_task(api, agent["id"]).json_body
    assert api.call("DELETE", f"/agents/{agent['id']}").status_code == 204
    got = api.call("GET", f"/tasks/{task['id']}").json_body
    assert got["status"] == "cancelled" and got["error"]["code"] == "AGENT_DELETED"


def test_list_filters_and_cursor_pagination(api: Api) -> None:
    api.signup()
    a1, a2 = api.agent(name="one")["id"], api.agent(name="two")["id"]
    created = [create_task(api, a1 if i % 2 else a2, priority="high" if i < 2 else "low").json_body
               for i in range(5)]
    api.call("POST", f"/tasks/{created[0]['id']}/cancel")

    def ids(query: str) -> list[str]:
        r = api.call("GET", f"/tasks{query}")
        assert r.status_code == 200, r.json_body
        return [t["id"] for t in r.json_body["items"]]

    newest_first = [t["id"] for t in reversed(created)]
    assert ids("") == newest_first
    assert ids(f"?agent_id={a1}") == [t for t in newest_first if t in {created[1]['id'], created[3]['id']}]
    assert ids("?priority=high") == [created[1]["id"], created[0]["id"]]
    assert ids("?status=cancelled") == [created[0]["id"]]
    assert ids("?status=cancelled&priority=low") == []
    middle = created[2]["created_at"].replace("+00:00", "Z")
    assert ids(f"?created_after={middle}") == newest_first[:3]
    assert ids(f"?created_before={middle}") == newest_first[3:]

    seen, cursor = [], None
    while True:
        page = api.call("GET", "/tasks?limit=2" + (f"&cursor={cursor}" if cursor else "")).json_body
        seen += [t["id"] for t in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == newest_first

    for bad in ("?status=bogus", "?limit=0", "?agent_id=nope", "?colour=red", "?created_after=yesterday",
                "?created_after=2026-01-01T00:00:00"):
        assert_envelope(api.call("GET", f"/tasks{bad}"), 422, "VALIDATION_ERROR")


def test_list_issues_the_same_statements_for_1_and_100_tasks(api: Api, db: Any, container: Any) -> None:
    api.signup()
    agent = api.agent()
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    def list_statements() -> int:
        statements.clear()
        event.listen(db.engine, "before_cursor_execute", count)
        try:
            r = api.call("GET", "/tasks?limit=200")
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
        assert r.status_code == 200
        return len(statements)

    create_task(api, agent["id"])
    one = list_statements()
    container.relay.publisher = type("Null", (), {"publish": lambda self, d, m: set()})()
    for _ in range(99):
        create_task(api, agent["id"])
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(Task)) == 100
    hundred = list_statements()
    assert one == hundred == 1
