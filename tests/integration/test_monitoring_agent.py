"""The monitoring agent and the scheduled monitor: stale agents go offline, alerts reach the SNS topic.

The topic is moto's; an SQS queue subscribed to it is where the tests read the alerts, as an
operator's subscription would receive them.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from sqlalchemy import update

from chalicelib.db.models import Agent
from chalicelib.db.types import utcnow
from functions.monitor import handler as monitor_handler
from infra.bootstrap import ensure_alert_topic
from tests.integration.conftest import PREFIX, Api, FakeContext
from tests.integration.test_api_auth import assert_envelope
from tests.integration.test_consumer import message, run


@pytest.fixture
def alerts(aws: Any) -> Any:
    """The alert topic (as infra.bootstrap creates it) with an SQS queue subscribed; returns a reader."""
    sns = boto3.client("sns", region_name="us-east-1")
    topic = ensure_alert_topic(sns, PREFIX)
    assert ensure_alert_topic(sns, PREFIX) == topic  # idempotent
    url = aws.create_queue(QueueName="operator-inbox")["QueueUrl"]
    arn = aws.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)

    def read() -> list[dict[str, Any]]:
        received = aws.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        for m in received:
            aws.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        envelopes = [json.loads(m["Body"]) for m in received]
        return [{"subject": e["Subject"], **json.loads(e["Message"])} for e in envelopes]

    return read


def set_agent(db: Any, agent_id: str, **values: Any) -> None:
    with db.transaction() as session:
        session.execute(update(Agent).where(Agent.id == uuid.UUID(agent_id)).values(**values))


def check(api: Api, input_data: dict[str, Any] | None = None, mid: str = "mon1", receive_count: int = 1) -> Any:
    agents = [a for a in api.call("GET", "/agents").json_body["items"] if a["type"] == "monitoring"]
    monitor = agents[0] if agents else api.agent("monitoring", name="watcher")
    task = api.call("POST", "/tasks", {"agent_id": monitor["id"], "title": "check",
                                       "input_data": input_data or {}}).json_body
    return task["id"], run([(mid, message(task["id"], "monitoring"))], "monitoring", receive_count)


def stale_fleet(api: Api, db: Any) -> dict[str, dict[str, Any]]:
    """Agents whose heartbeats say different things, ten minutes after the fact."""
    now = utcnow()
    fleet = {name: api.agent("validation", name=name) for name in ("silent", "fresh", "never", "paused")}
    fleet["ghost"] = api.call("POST", "/agents", {"name": "ghost", "type": "validation", "mode": "external"}).json_body
    set_agent(db, fleet["silent"]["id"], last_heartbeat=now - timedelta(minutes=10))  # stopped heartbeating
    set_agent(db, fleet["fresh"]["id"], last_heartbeat=now - timedelta(minutes=1))
    set_agent(db, fleet["paused"]["id"], last_heartbeat=now - timedelta(hours=1), status="inactive")
    set_agent(db, fleet["ghost"]["id"], created_at=now - timedelta(minutes=10))  # its worker never came up
    return fleet


def test_stale_agents_go_offline_and_the_operators_are_alerted(api: Api, other_api: Api, db: Any,
                                                               alerts: Any) -> None:
    other_api.signup()
    theirs = other_api.agent("validation", name="theirs")
    set_agent(db, theirs["id"], last_heartbeat=utcnow() - timedelta(hours=1))
    api.signup()
    fleet = stale_fleet(api, db)
    assert api.call("GET", f"/agents/{fleet['silent']['id']}").json_body["status"] == "active"

    task_id, response = check(api)
    assert response == {"batchItemFailures": []}
    task = api.call("GET", f"/tasks/{task_id}").json_body
    assert task["status"] == "completed", task
    output = task["result"]["output_data"]
    assert output["checked"] == ["dependencies", "heartbeats", "dlq"] and output["stale_after_seconds"] == 300
    assert output["dependencies"]["status"] == "ok" and all(q["dlq_messages"] == 0 for q in output["queues"])
    assert [(a["name"], a["mode"]) for a in output["offline"]] == [("ghost", "external"), ("silent", "managed")]
    assert output["offline"][1]["silent_seconds"] >= 600
    [alert] = output["alerts"]
    assert alert["kind"] == "agents_offline" and alert["status"] == "sent" and alert["message_id"]
    assert output["healthy"] is False

    statuses = {name: api.call("GET", f"/agents/{a['id']}").json_body["status"] for name, a in fleet.items()}
    assert statuses == {"silent": "offline", "fresh": "active", "never": "active", "paused": "inactive",
                        "ghost": "offline"}
    assert other_api.call("GET", f"/agents/{theirs['id']}").json_body["status"] == "active"  # not my agent

    [received] = alerts()
    assert received["kind"] == "agents_offline" and received["severity"] == "warning"
    assert received["subject"].startswith("[warning] 2 agent(s) marked offline")
    assert {a["name"] for a in received["details"]["agents"]} == {"ghost", "silent"}
    assert received["user_id"] and received["task_id"] == task_id

    # A second check finds nothing new: no second alert for the same transition.
    _, again = check(api, mid="mon2")
    assert again == {"batchItemFailures": []}
    assert alerts() == []


def test_a_missing_queue_and_a_non_empty_dlq_alert_once_per_cooldown(api: Api, aws: Any, alerts: Any) -> None:
    aws.send_message(QueueUrl=aws.get_queue_url(QueueName=f"{PREFIX}-agent-llm-dlq")["QueueUrl"], MessageBody="x")
    aws.delete_queue(QueueUrl=aws.get_queue_url(QueueName=f"{PREFIX}-agent-security")["QueueUrl"])
    api.signup()
    task_id, _ = check(api, {"checks": ["dependencies", "dlq"]})
    output = api.call("GET", f"/tasks/{task_id}").json_body["result"]["output_data"]
    assert output["dependencies"]["checks"]["queues"]["status"] == "down"
    assert {(a["kind"], a["status"]) for a in output["alerts"]} == {("dependency_down", "sent"),
                                                                   ("dlq_not_empty", "sent")}
    unreadable = [q for q in output["queues"] if q["error"]]
    assert [q["agent_type"] for q in unreadable] == ["security"]
    received = {a["kind"]: a for a in alerts()}
    assert received["dlq_not_empty"]["details"] == {"agent_type": "llm", "dlq": f"{PREFIX}-agent-llm-dlq",
                                                    "messages": 1}
    assert received["dependency_down"]["details"]["dependency"] == "queues"
    # The same standing conditions a minute later: reported, not re-sent.
    task_id, _ = check(api, {"checks": ["dependencies", "dlq"]}, mid="mon2")
    again = api.call("GET", f"/tasks/{task_id}").json_body["result"]["output_data"]["alerts"]
    assert {a["status"] for a in again} == {"suppressed"}
    assert alerts() == []


def test_the_scheduled_monitor_covers_every_user(api: Api, other_api: Api, db: Any, alerts: Any) -> None:
    api.signup()
    mine = api.agent("validation", name="mine")
    other_api.signup()
    theirs = other_api.agent("validation", name="theirs")
    for agent in (mine, theirs):
        set_agent(db, agent["id"], last_heartbeat=utcnow() - timedelta(minutes=30))
    summary = monitor_handler({}, FakeContext())
    assert summary["agents_marked_offline"] == 2 and summary["healthy"] is False
    assert summary["dependencies"] == "ok"
    [received] = alerts()
    assert received["scope"] == "platform" and {a["name"] for a in received["details"]["agents"]} == {"mine",
                                                                                                     "theirs"}
    assert monitor_handler({}, FakeContext())["agents_marked_offline"] == 0


def test_without_a_reachable_topic_the_offline_marks_wait_for_an_alert(api: Api, aws: Any, db: Any) -> None:
    # No alert topic exists (nobody ran infra.bootstrap): nobody can be told.
    api.signup()
    silent = api.agent("validation", name="silent")
    set_agent(db, silent["id"], last_heartbeat=utcnow() - timedelta(minutes=10))
    with pytest.raises(BatchProcessingError):  # retried by SQS; the offline mark rolled back with it
        check(api, {"checks": ["heartbeats"]}, mid="mon1")
    assert api.call("GET", f"/agents/{silent['id']}").json_body["status"] == "active"
    task_id, response = check(api, {"checks": ["heartbeats"]}, mid="mon2", receive_count=5)  # the last attempt
    assert response == {"batchItemFailures": []}
    failed = api.call("GET", f"/tasks/{task_id}").json_body
    assert failed["status"] == "failed" and failed["error"]["code"] == "ALERT_DELIVERY_FAILED"
    assert "ymera-test-alerts" in failed["error"]["details"]["alerts"][0]["error"]
    assert api.call("GET", f"/agents/{silent['id']}").json_body["status"] == "active"


def test_invalid_monitoring_input_is_422(api: Api) -> None:
    api.signup()
    monitor = api.agent("monitoring")
    r = api.call("POST", "/tasks", {"agent_id": monitor["id"], "title": "m",
                                    "input_data": {"checks": ["disk"], "stale_after_seconds": 1}})
    locs = {tuple(e["loc"]) for e in assert_envelope(r, 422, "VALIDATION_ERROR")["details"]["errors"]}
    assert locs == {("input_data", "checks", "0"), ("input_data", "stale_after_seconds")}
