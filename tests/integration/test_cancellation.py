"""Cancellation stops work: a cancelled queued task never runs; a running one is told (AgentContext.cancelled,
checked before every model call) and its run is discarded; POST /tasks/{id}/cancel answers at once whatever
the consumer is doing. Real Postgres and Redis."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import select

from chalicelib.agents.base import AgentContext, AgentOutput, StaticPorts
from chalicelib.agents.validation import ValidationAgent
from chalicelib.container import Container
from chalicelib.db.models import Task, TaskResult
from chalicelib.db.session import Database
from chalicelib.errors import TaskCancelledError
from chalicelib.providers.config import ProviderConfig
from chalicelib.providers.registry import Providers
from chalicelib.services.processing import CancelCheck, TaskProcessor
from functions.agent_consumer import handler
from tests.integration.conftest import Api, FakeContext, sqs_event
from tests.integration.test_api_tasks import create_task
from tests.integration.test_consumer import message
from tests.llm_server import LLMServer, Reply, catalog, llm_settings, recorded


class BlockingAgent(ValidationAgent):
    """Runs in steps until released; `cooperative` ones stop at the first step after a cancellation."""

    isolated = False

    def __init__(self, cooperative: bool) -> None:
        self.cooperative = cooperative
        self.started = threading.Event()
        self.release = threading.Event()
        self.steps = 0

    def run(self, data: BaseModel, config: Mapping[str, Any], ctx: AgentContext | None = None) -> AgentOutput:
        assert ctx is not None
        self.started.set()
        while not self.release.wait(0.02):
            self.steps += 1
            if self.cooperative:
                ctx.raise_if_cancelled()
        return AgentOutput({"valid": True, "errors": []})


def result_of(db: Database, task_id: str) -> tuple[Task, TaskResult | None]:
    with db.read() as session:
        task = session.scalar(select(Task).where(Task.id == task_id))
        result = session.scalar(select(TaskResult).where(TaskResult.task_id == task_id))
        assert task is not None
        session.expunge_all()
        return task, result


def test_a_cancelled_queued_task_is_never_run(api: Api, db: Database, container: Container) -> None:
    api.signup()
    task = create_task(api, api.agent()["id"]).json_body
    assert api.call("POST", f"/tasks/{task['id']}/cancel").status_code == 200
    agent = BlockingAgent(cooperative=True)
    container.processor = TaskProcessor(db, agent_loader=lambda _t: agent)
    assert handler(sqs_event([("m1", message(task["id"]))]), FakeContext()) == {"batchItemFailures": []}
    got, result = result_of(db, task["id"])
    assert (got.status, got.attempts, result, agent.started.is_set()) == ("cancelled", 0, None, False)


def run_blocked(api: Api, db: Database, container: Container, cooperative: bool) -> tuple[str, float, Any, Any]:
    api.signup()
    task = create_task(api, api.agent()["id"]).json_body
    agent = BlockingAgent(cooperative)
    container.processor = TaskProcessor(db, agent_loader=lambda _t: agent, cancel_check_seconds=0.05)
    answers: list[dict[str, Any]] = []
    consumer = threading.Thread(target=lambda: answers.append(
        handler(sqs_event([("m1", message(task["id"]))]), FakeContext())))
    consumer.start()
    try:
        assert agent.started.wait(10)
        # WHEN the user cancels while the agent is mid-run in the consumer's thread
        started = time.perf_counter()
        response = api.call("POST", f"/tasks/{task['id']}/cancel")
        answered = time.perf_counter() - started
        assert response.status_code == 200, response.json_body
        if not cooperative:
            time.sleep(0.2)
            agent.release.set()  # the run ends with a "success" after the cancellation
        consumer.join(10)
    finally:
        agent.release.set()
        consumer.join(10)
    assert answers == [{"batchItemFailures": []}]
    return task["id"], answered, *result_of(db, task["id"])


def test_cancel_answers_at_once_and_a_cooperative_agent_stops(api: Api, db: Database, container: Container) -> None:
    task_id, answered, task, result = run_blocked(api, db, container, cooperative=True)
    assert answered < 1.0, answered
    print(f"cancel answered in {answered * 1000:.0f} ms while the agent ran")
    assert task.status == "cancelled"
    assert result is not None and result.status == "cancelled" and result.output_data == {}
    assert result.metrics["discarded"] == "failed"  # it stopped with TASK_CANCELLED


def test_a_run_that_finishes_after_cancel_is_discarded(api: Api, db: Database, container: Container) -> None:
    task_id, answered, task, result = run_blocked(api, db, container, cooperative=False)
    assert answered < 1.0, answered
    assert task.status == "cancelled" and task.error is None
    # The run's "valid: true" is not stored as the task's result
    assert result is not None and result.status == "cancelled" and result.output_data == {}
    assert result.metrics["discarded"] == "completed"
    got = api.call("GET", f"/tasks/{task_id}").json_body
    assert got["status"] == "cancelled" and got["result"]["status"] == "cancelled"


def test_cancel_check_is_throttled(api: Api, db: Database) -> None:
    api.signup()
    task = create_task(api, api.agent()["id"]).json_body
    now = [0.0]
    check = CancelCheck(db, task["id"], every_seconds=1.0, clock=lambda: now[0])
    assert check() is False
    assert api.call("POST", f"/tasks/{task['id']}/cancel").status_code == 200
    assert check() is False  # within the interval: the last answer, no query
    now[0] = 1.5
    assert check() is True


def test_a_cancelled_task_makes_no_further_model_call() -> None:
    # GIVEN a provider session opened through a cancelled task's context
    with LLMServer() as server:
        server.script(Reply(body=recorded("openai_chat_completion")))
        providers = Providers(llm_settings(llm_endpoints=catalog(server)), environ={"YMERA_LLM_KEY_TEST": "sk-1"})
        cancelled = [False]
        ctx = AgentContext(task_id=uuid.uuid4(), agent_id=uuid.uuid4(), user_id=uuid.uuid4(), agent_type="drafting",
                           now=datetime.now(UTC), ports=StaticPorts(providers=providers),
                           cancel_check=lambda: cancelled[0])
        assert ctx.providers is not None
        session = ctx.providers.session(ProviderConfig(endpoint="test", model="gpt-4o-mini"))
        session.complete("first")
        # WHEN the task is cancelled
        cancelled[0] = True
        # THEN the next model call is refused before it is sent
        with pytest.raises(TaskCancelledError):
            session.complete("second")
        assert len(server.requests) == 1


def test_an_orchestrator_cancelled_before_its_plan_starts_creates_no_subtask(api: Api, db: Database,
                                                                            container: Container) -> None:
    # GIVEN an orchestrator task whose user cancels it while it runs (here: just before its plan starts)
    from chalicelib.agents.orchestrator import OrchestratorAgent
    from tests.integration.orchestrator_support import OK_SCHEMA, children, plan_run, start

    api.signup()
    api.agent("validation", name="validator")
    boss = api.agent("orchestrator", name="boss")
    parent = start(api, boss, {"goal": "g", "plan": [{"step_id": "a", "agent_type": "validation",
                                                       "input_data": OK_SCHEMA}]})

    class CancelledMidRun(OrchestratorAgent):
        def run(self, data: BaseModel, config: Mapping[str, Any], ctx: AgentContext | None = None) -> AgentOutput:
            assert api.call("POST", f"/tasks/{parent['id']}/cancel").status_code == 200
            return super().run(data, config, ctx)

    container.processor = TaskProcessor(db, agent_loader=lambda _t: CancelledMidRun(), ports=container.processor.ports)
    assert handler(sqs_event([("m1", message(parent["id"], "orchestrator"))], "orchestrator"),
                   FakeContext()) == {"batchItemFailures": []}
    # THEN it stays cancelled and no run (nor any subtask) exists
    task, result = result_of(db, parent["id"])
    assert task.status == "cancelled" and children(db, parent["id"]) == {} and plan_run(db, parent["id"]) is None
    assert result is not None and result.status == "cancelled"
