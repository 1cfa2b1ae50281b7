"""The monitoring agent and the scheduled monitor: stale agents go offline, alerts reach the SNS topic.

The topic is moto's; an SQS queue subscribed to it is where the tests read the alerts, as an
operator's subscription would receive them.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from sqlalchemy import update

from chalicelib.db.models import Agent
from chalicelib.db.types import utcnow
from chalicelib.services.alerts import AlertPublisher
from functions.monitor import AlertsNotDelivered
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


def test_stale_agents_go_offline_and_their_owner_is_alerted(api: Api, other_api: Api, db: Any,
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
    assert alert["kind"] == "agents_offline" and alert["status"] == "recorded"
    assert output["healthy"] is False

    statuses = {name: api.call("GET", f"/agents/{a['id']}").json_body["status"] for name, a in fleet.items()}
    assert statuses == {"silent": "offline", "fresh": "active", "never": "active", "paused": "inactive",
                        "ghost": "offline"}
    assert other_api.call("GET", f"/agents/{theirs['id']}").json_body["status"] == "active"  # not my agent

    # A user's check alerts that user, not the operators.
    assert alerts() == []
    [row] = my_alerts(api)
    assert row["action"] == "agents_offline" and row["resource_id"] == task_id
    assert row["details"]["summary"].startswith("2 agent(s) marked offline")
    assert {a["name"] for a in row["details"]["agents"]} == {"ghost", "silent"}
    assert my_alerts(other_api) == []

    # A second check finds nothing new: no second alert for the same transition.
    _, again = check(api, mid="mon2")
    assert again == {"batchItemFailures": []}
    assert len(my_alerts(api)) == 1


def my_alerts(api: Api) -> list[dict[str, Any]]:
    r = api.call("GET", "/audit-logs?event_type=alert")
    assert r.status_code == 200, r.json_body
    return list(r.json_body["items"])


def test_a_missing_queue_and_a_non_empty_dlq_are_the_users_alerts_and_the_operators_once(
        api: Api, aws: Any, alerts: Any) -> None:
    aws.send_message(QueueUrl=aws.get_queue_url(QueueName=f"{PREFIX}-agent-llm-dlq")["QueueUrl"], MessageBody="x")
    aws.delete_queue(QueueUrl=aws.get_queue_url(QueueName=f"{PREFIX}-agent-security")["QueueUrl"])
    api.signup()
    task_id, _ = check(api, {"checks": ["dependencies", "dlq"]})
    output = api.call("GET", f"/tasks/{task_id}").json_body["result"]["output_data"]
    assert output["dependencies"]["checks"]["queues"]["status"] == "down"
    assert {(a["kind"], a["status"]) for a in output["alerts"]} == {("dependency_down", "recorded"),
                                                                   ("dlq_not_empty", "recorded")}
    unreadable = [q for q in output["queues"] if q["error"]]
    assert [q["agent_type"] for q in unreadable] == ["security"]
    mine = {a["action"]: a["details"] for a in my_alerts(api)}
    assert mine["dlq_not_empty"]["dlq"] == f"{PREFIX}-agent-llm-dlq" and mine["dlq_not_empty"]["messages"] == 1
    assert alerts() == []  # however often users ask, the operators hear it from the scheduled monitor only

    # The operators: once per cooldown, from the scheduled monitor.
    first = monitor_handler({}, FakeContext())
    assert {a["status"] for a in first["alerts"]} == {"sent"}
    received = {a["kind"]: a for a in alerts()}
    assert received["dlq_not_empty"]["details"] == {"agent_type": "llm", "dlq": f"{PREFIX}-agent-llm-dlq",
                                                    "messages": 1}
    assert received["dependency_down"]["details"]["dependency"] == "queues"
    summary = monitor_handler({}, FakeContext())  # the same standing conditions five minutes later
    assert {a["status"] for a in summary["alerts"]} == {"suppressed"}
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


class AwsSubjectRules:
    """moto's SNS with the real service's Subject rule (moto accepts anything under 100 characters):
    printable ASCII only, no line breaks, at most 100 characters — else InvalidParameter for the whole Publish."""

    def __init__(self, sns: Any) -> None:
        self.sns = sns

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sns, name)

    def publish(self, **kwargs: Any) -> Any:
        subject = kwargs.get("Subject")
        if subject is not None and not re.fullmatch(r"[\x20-\x7e]{1,100}", subject):
            raise ClientError({"Error": {"Code": "InvalidParameter", "Message": "Invalid parameter: Subject"}},
                              "Publish")
        return self.sns.publish(**kwargs)


def test_an_agent_name_sns_refuses_does_not_stop_offline_detection(api: Api, other_api: Api, db: Any,
                                                                   container: Any, alerts: Any) -> None:
    # GIVEN a user whose agent is named with a control character (stored before names were checked)
    container.alerts = AlertPublisher(lambda: AwsSubjectRules(boto3.client("sns", region_name="us-east-1")),
                                      topic_name=f"{PREFIX}-alerts", redis=container.redis,
                                      key_prefix=container.settings.redis_key_prefix)
    api.signup()
    odd = api.agent("validation", name="odd")
    set_agent(db, odd["id"], name="\u0001x\nline", last_heartbeat=utcnow() - timedelta(minutes=30))
    other_api.signup()
    theirs = other_api.agent("validation", name="theirs")
    set_agent(db, theirs["id"], last_heartbeat=utcnow() - timedelta(minutes=30))
    # WHEN the scheduled monitor runs
    summary = monitor_handler({}, FakeContext())
    # THEN both go offline and the operators get one alert with a subject SNS accepts
    assert summary["agents_marked_offline"] == 2 and summary["alerts_undelivered"] == 0
    assert other_api.call("GET", f"/agents/{theirs['id']}").json_body["status"] == "offline"
    [received] = alerts()
    assert re.fullmatch(r"[\x20-\x7e]{1,100}", received["subject"]), received["subject"]
    assert "\u0001x\nline" in {a["name"] for a in received["details"]["agents"]}  # the body keeps the exact name


def test_an_alert_that_cannot_be_delivered_keeps_every_users_offline_marks(api: Api, other_api: Api,
                                                                           db: Any) -> None:
    # No alert topic exists (nobody ran infra.bootstrap): nobody can be told.
    api.signup()
    silent = api.agent("validation", name="silent")
    other_api.signup()
    theirs = other_api.agent("validation", name="theirs")
    for agent in (silent, theirs):
        set_agent(db, agent["id"], last_heartbeat=utcnow() - timedelta(minutes=10))
    with pytest.raises(AlertsNotDelivered):  # the function fails (its Errors alarm pages)...
        monitor_handler({}, FakeContext())
    for client, agent in ((api, silent), (other_api, theirs)):  # ...after the marks committed
        assert client.call("GET", f"/agents/{agent['id']}").json_body["status"] == "offline"
        [row] = my_alerts(client)  # and each owner has the record of it
        assert row["action"] == "agents_offline"
        assert [a["agent_id"] for a in row["details"]["agents"]] == [agent["id"]]
    # A user's own check needs no topic at all.
    _, response = check(api, {"checks": ["heartbeats"]}, mid="mon1")
    assert response == {"batchItemFailures": []}


def test_invalid_monitoring_input_is_422(api: Api) -> None:
    api.signup()
    monitor = api.agent("monitoring")
    r = api.call("POST", "/tasks", {"agent_id": monitor["id"], "title": "m",
                                    "input_data": {"checks": ["disk"], "stale_after_seconds": 1}})
    locs = {tuple(e["loc"]) for e in assert_envelope(r, 422, "VALIDATION_ERROR")["details"]["errors"]}
    assert locs == {("input_data", "checks", "0"), ("input_data", "stale_after_seconds")}
