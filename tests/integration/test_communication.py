"""Messages between agents: delivery by the consumer, the inbox API, and undeliverable messages reported."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from chalicelib.db.models import AgentMessage
from tests.integration.conftest import Api
from tests.integration.test_api_auth import assert_envelope
from tests.integration.test_consumer import message, run


def send(api: Api, courier: dict[str, Any], input_data: dict[str, Any], mid: str = "c1") -> dict[str, Any]:
    """Create a communication task, run it through the real consumer, return the finished task."""
    r = api.call("POST", "/tasks", {"agent_id": courier["id"], "title": "message", "input_data": input_data})
    assert r.status_code == 202, r.json_body
    assert run([(mid, message(r.json_body["id"], "communication"))], "communication") == {"batchItemFailures": []}
    return dict(api.call("GET", f"/tasks/{r.json_body['id']}").json_body)


def inbox(api: Api, agent_id: str, **query: str) -> Any:
    suffix = "&".join(f"{k}={v}" for k, v in query.items())
    return api.call("GET", f"/agents/{agent_id}/messages" + (f"?{suffix}" if suffix else ""))


def test_a_direct_message_lands_in_the_inbox_and_is_marked_read(api: Api) -> None:
    api.signup()
    courier = api.agent("communication", name="courier")
    writer = api.agent("validation", name="writer")
    reader = api.agent("examination", name="reader")
    task = send(api, courier, {"from_agent_id": writer["id"], "to_agent_id": reader["id"],
                               "body": {"subject": "schema v2", "fields": ["currency"]}})
    assert task["status"] == "completed", task
    output = task["result"]["output_data"]
    assert output["sender_agent_id"] == writer["id"] and output["to"] == {"agent_id": reader["id"]}
    assert (output["delivered_count"], output["undeliverable_count"]) == (1, 0)
    [delivered] = output["delivered"]
    assert delivered["recipient_agent_id"] == reader["id"] and delivered["recipient_name"] == "reader"

    page = inbox(api, reader["id"]).json_body
    [msg] = page["items"]
    assert page["next_cursor"] is None
    assert msg["id"] == delivered["message_id"] and msg["sender_agent_id"] == writer["id"]
    assert msg["body"] == {"subject": "schema v2", "fields": ["currency"]} and msg["status"] == "delivered"
    assert msg["task_id"] == task["id"] and msg["read_at"] is None
    assert inbox(api, writer["id"]).json_body["items"] == []  # the sender's inbox is not the recipient's

    first = api.call("POST", f"/agents/{reader['id']}/messages/{msg['id']}/read").json_body
    assert first["status"] == "read" and first["read_at"]
    again = api.call("POST", f"/agents/{reader['id']}/messages/{msg['id']}/read").json_body
    assert again["read_at"] == first["read_at"]  # idempotent
    assert inbox(api, reader["id"], unread="true").json_body["items"] == []
    assert [m["status"] for m in inbox(api, reader["id"]).json_body["items"]] == ["read"]


def test_broadcast_to_a_type_reaches_each_live_agent_and_reports_inactive_ones(api: Api) -> None:
    api.signup()
    courier = api.agent("communication", name="courier")
    a = api.agent("validation", name="a")
    b = api.agent("validation", name="b")
    paused = api.agent("validation", name="paused")
    gone = api.agent("validation", name="gone")
    api.call("PUT", f"/agents/{paused['id']}", {"status": "inactive"})
    api.call("DELETE", f"/agents/{gone['id']}")
    output = send(api, courier, {"to_type": "validation", "body": "rebuild your caches"})["result"]["output_data"]
    assert sorted(d["recipient_name"] for d in output["delivered"]) == ["a", "b"]
    assert [(u["recipient_name"], u["code"]) for u in output["undeliverable"]] == [("paused", "RECIPIENT_INACTIVE")]
    for agent in (a, b):
        [msg] = inbox(api, agent["id"]).json_body["items"]
        assert msg["body"] == {"text": "rebuild your caches"} and msg["sender_agent_id"] == courier["id"]
    assert inbox(api, paused["id"]).json_body["items"] == []  # undeliverable never shows in an inbox


def test_undeliverable_messages_are_reported_and_kept(api: Api, other_api: Api, db: Any) -> None:
    api.signup()
    courier = api.agent("communication", name="courier")
    deleted = api.agent("validation", name="deleted")
    api.call("DELETE", f"/agents/{deleted['id']}")
    other_api.signup()
    theirs = other_api.agent("validation", name="theirs")
    cases = [({"to_agent_id": theirs["id"]}, "RECIPIENT_NOT_FOUND", None),
             ({"to_agent_id": str(uuid.uuid4())}, "RECIPIENT_NOT_FOUND", None),
             ({"to_agent_id": deleted["id"]}, "RECIPIENT_DELETED", deleted["id"]),
             ({"to_type": "security"}, "NO_RECIPIENTS_OF_TYPE", None)]
    for i, (target, code, recipient) in enumerate(cases):
        task = send(api, courier, {**target, "body": "hello?"}, mid=f"c{i}")
        assert task["status"] == "completed"
        output = task["result"]["output_data"]
        assert output["delivered"] == [] and output["undeliverable_count"] == 1
        [report] = output["undeliverable"]
        assert (report["code"], report["recipient_agent_id"]) == (code, recipient), report
        assert report["reason"]
        with db.read() as session:  # kept for the sender, with the reason
            row = session.get(AgentMessage, uuid.UUID(report["message_id"]))
            assert row.status == "undeliverable" and row.error.startswith(code)
            assert row.sender_agent_id == uuid.UUID(courier["id"])
    # The other user's agent received nothing and learned nothing.
    assert other_api.call("GET", f"/agents/{theirs['id']}/messages").json_body["items"] == []


def test_inbox_pagination_and_access(api: Api, other_api: Api, db: Any) -> None:
    api.signup()
    courier = api.agent("communication", name="courier")
    reader = api.agent("validation", name="reader")
    for i in range(3):
        send(api, courier, {"to_agent_id": reader["id"], "body": f"n{i}"}, mid=f"c{i}")
    first = inbox(api, reader["id"], limit="2").json_body
    assert [m["body"]["text"] for m in first["items"]] == ["n2", "n1"]
    rest = inbox(api, reader["id"], limit="2", cursor=first["next_cursor"]).json_body
    assert [m["body"]["text"] for m in rest["items"]] == ["n0"] and rest["next_cursor"] is None
    assert_envelope(inbox(api, reader["id"], unread="maybe"), 422, "VALIDATION_ERROR")
    other_api.signup()
    assert_envelope(other_api.call("GET", f"/agents/{reader['id']}/messages"), 404, "NOT_FOUND")
    mid = first["items"][0]["id"]
    assert_envelope(other_api.call("POST", f"/agents/{reader['id']}/messages/{mid}/read"), 404, "NOT_FOUND")
    assert_envelope(api.call("POST", f"/agents/{courier['id']}/messages/{mid}/read"), 404, "NOT_FOUND")
    assert_envelope(api.call("GET", f"/agents/{reader['id']}/messages", token=""), 401, "AUTHENTICATION_ERROR")
    with db.read() as session:
        assert session.scalar(select(AgentMessage.read_at).where(AgentMessage.id == uuid.UUID(mid))) is None


def test_invalid_input_is_422_and_a_foreign_sender_fails_the_task(api: Api, other_api: Api) -> None:
    api.signup()
    courier = api.agent("communication", name="courier")
    r = api.call("POST", "/tasks", {"agent_id": courier["id"], "title": "m",
                                    "input_data": {"to_type": "wizard", "to_agent_id": courier["id"], "body": ""}})
    error = assert_envelope(r, 422, "VALIDATION_ERROR")
    assert {tuple(e["loc"]) for e in error["details"]["errors"]} >= {("input_data", "to_type")}
    other_api.signup()
    stranger = other_api.agent("validation", name="stranger")
    task = send(api, courier, {"from_agent_id": stranger["id"], "to_agent_id": courier["id"], "body": "spoof"})
    assert task["status"] == "failed"
    assert task["error"]["code"] == "SENDER_NOT_FOUND" and task["error"]["details"]["from_agent_id"] == stranger["id"]
    assert api.call("GET", f"/agents/{courier['id']}/messages").json_body["items"] == []
