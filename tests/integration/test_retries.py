"""Retries that back off: a retryable agent failure comes back after an exponential, jittered delay set with
ChangeMessageVisibility (not the queue's fixed visibility timeout); an infrastructure failure comes back after
a short one. Real Postgres, moto SQS driven by the local runner (the test queues' visibility timeout is 1 s, so
"not visible after 2 s" proves the delay was applied)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import select

from chalicelib.agents.base import AgentContext, AgentOutput
from chalicelib.agents.validation import ValidationAgent
from chalicelib.config import Settings
from chalicelib.container import Container, set_container
from chalicelib.db.models import Task
from chalicelib.db.session import Database, make_engine
from chalicelib.errors import AgentError
from chalicelib.providers.errors import ProviderRejectedError, ProviderUnavailableError
from chalicelib.services.processing import Backoff, TaskProcessor
from infra import manifest
from infra.local.runner import EventSourceRunner
from tests.integration.conftest import PREFIX, Api
from tests.integration.test_api_tasks import create_task

SPEC = next(s for s in manifest.functions() if s.name == "agent-validation")


class FailingAgent(ValidationAgent):
    def __init__(self, error: AgentError) -> None:
        self.error = error
        self.runs = 0

    def run(self, data: BaseModel, config: Mapping[str, Any], ctx: AgentContext | None = None) -> AgentOutput:
        self.runs += 1
        raise self.error


def visible(aws: Any) -> list[dict[str, Any]]:
    url = aws.get_queue_url(QueueName=f"{PREFIX}-agent-validation")["QueueUrl"]
    return aws.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0,
                               AttributeNames=["All"]).get("Messages", [])


def first_visible_after(aws: Any, limit: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if visible(aws):
            return time.monotonic() - started
        time.sleep(0.1)
    return float("inf")


def status_of(db: Database, task_id: str) -> Task:
    with db.read() as session:
        task = session.scalar(select(Task).where(Task.id == task_id))
        assert task is not None
        session.expunge(task)
        return task


def test_backoff_is_exponential_with_jitter_and_capped() -> None:
    low, high = Backoff(10, 100, rng=lambda: 0.0), Backoff(10, 100, rng=lambda: 1.0)
    assert [low.delay(n) for n in (1, 2, 3, 4, 5)] == [5, 10, 20, 40, 50]
    assert [high.delay(n) for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 80, 100]
    assert low.delay(1, at_least=30) == 30  # a provider's Retry-After wins
    assert Backoff(3600, 43_200 * 10, rng=lambda: 1.0).delay(40) == 43_200  # SQS's limit


def test_retryable_failure_returns_after_its_backoff_then_fails_at_the_limit(api: Api, aws: Any, db: Database,
                                                                           container: Container) -> None:
    # GIVEN a task whose agent's provider is down (retryable), and a 3 s backoff
    api.signup()
    task = create_task(api, api.agent()["id"]).json_body
    agent = FailingAgent(ProviderUnavailableError("provider down", {"status": 503}))
    container.processor = TaskProcessor(db, agent_loader=lambda _t: agent, max_attempts=manifest.MAX_RECEIVE_COUNT,
                                        backoff=Backoff(3, 3, rng=lambda: 1.0))
    runner = EventSourceRunner(aws, PREFIX, [SPEC], wait_seconds=0)

    # WHEN the consumer runs it once
    assert runner.poll_once(SPEC) == 1
    # THEN the task waits in the queue with the error, and its message is hidden for the backoff, not 1 s
    got = status_of(db, task["id"])
    assert (got.status, got.attempts, got.error["code"]) == ("queued", 1, "PROVIDER_UNAVAILABLE")
    back = first_visible_after(aws, 6)
    assert 2.0 <= back <= 4.5, back

    # WHEN every delivery fails the same way, up to the attempt limit
    deadline = time.monotonic() + 60
    while status_of(db, task["id"]).status == "queued" and time.monotonic() < deadline:
        runner.poll_once(SPEC, wait_seconds=0)
        time.sleep(0.2)
    # THEN the task fails with the last error; nothing is left to retry
    got = status_of(db, task["id"])
    assert (got.status, got.error["code"]) == ("failed", "PROVIDER_UNAVAILABLE")
    assert got.error["details"]["attempts"] == manifest.MAX_RECEIVE_COUNT
    assert agent.runs == manifest.MAX_RECEIVE_COUNT - 1  # the test's one visible peek counted as a receive


def test_non_retryable_failure_fails_at_once(api: Api, aws: Any, db: Database, container: Container) -> None:
    api.signup()
    task = create_task(api, api.agent()["id"]).json_body
    agent = FailingAgent(ProviderRejectedError("unknown model"))
    container.processor = TaskProcessor(db, agent_loader=lambda _t: agent, backoff=Backoff(3, 60))
    assert EventSourceRunner(aws, PREFIX, [SPEC], wait_seconds=0).poll_once(SPEC) == 1
    got = status_of(db, task["id"])
    assert (got.status, got.error["code"], agent.runs) == ("failed", "PROVIDER_REJECTED", 1)
    assert first_visible_after(aws, 1.5) == float("inf")  # deleted: done


def test_infrastructure_failure_returns_after_a_short_delay(api: Api, aws: Any, db: Database,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a consumer whose database is unreachable (nothing listens on port 9), short retry 3 s
    api.signup()
    create_task(api, api.agent()["id"])
    monkeypatch.setenv("YMERA_INFRA_RETRY_SECONDS", "3")
    unreachable = Database(make_engine("postgresql+psycopg://postgres@127.0.0.1:9/nowhere?connect_timeout=1"))
    broken = Container(Settings(), database=unreachable)
    set_container(broken)
    try:
        # WHEN it takes the batch: the claim fails
        response = EventSourceRunner(aws, PREFIX, [SPEC], wait_seconds=0).poll_once(SPEC)
    finally:
        unreachable.engine.dispose()
    assert response == 1
    # THEN the record returns after the short delay (3 s), neither at once nor after the visibility timeout
    back = first_visible_after(aws, 8)
    assert 2.0 <= back <= 4.5, back


def test_consumer_role_may_delay_its_own_records_only() -> None:
    from infra.template import build_template

    template = build_template("test")
    role = template["Resources"][next(k for k, v in template["Resources"].items()
                                      if v["Type"] == "AWS::IAM::Role" and "AgentValidation" in k)]
    statements = {s["Sid"]: s for s in role["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
                  if isinstance(s, dict) and "Sid" in s}
    consume = statements["ConsumeOwnQueue"]
    assert {"sqs:ChangeMessageVisibility", "sqs:GetQueueUrl"} <= set(consume["Action"])
    assert len(consume["Resource"]) == 1
