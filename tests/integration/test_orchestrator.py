"""The orchestrator end to end: fan-out through the outbox and the real consumer, aggregation, fail-fast,
cancellation, and a parent written exactly once when its last steps finish at the same moment."""

from __future__ import annotations

import copy
import json
import threading
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import func, select

from chalicelib.agents.base import Agent as AgentImpl
from chalicelib.agents.base import AgentContext, AgentOutput
from chalicelib.agents.registry import get_agent
from chalicelib.db.models import Task, TaskResult
from chalicelib.schemas.tasks import TaskMessage
from functions.agent_consumer import handler
from tests.integration.conftest import PREFIX, Api, FakeContext, sqs_event
from tests.integration.test_api_auth import assert_envelope
from tests.integration.test_consumer import message, run
from tests.llm_server import LLMServer, completion, openai_config

OK_SCHEMA = {"schema": {"type": "object", "required": ["id"]}, "payload": {"id": "A-1"}}
BAD_SCHEMA = {"schema": {"type": "nonsense"}, "payload": {}}  # valid input, but the agent fails on it
CODE = {"source": "def total(items):\n    return sum(i.price for i in items)\n"}


def relay_and_consume(container: Any, aws: Any) -> list[str]:
    """What the platform does between steps: the relay publishes the outbox, consumers take each queue's
    messages (real SQS messages, real consumer). Returns the agent types that had work."""
    container.relay.run_once()
    worked = []
    for agent_type in ("validation", "examination", "orchestrator"):
        url = aws.get_queue_url(QueueName=f"{PREFIX}-agent-{agent_type}")["QueueUrl"]
        messages = aws.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            continue
        worked.append(agent_type)
        event = sqs_event([(m["MessageId"], m["Body"]) for m in messages], agent_type)
        assert handler(event, FakeContext()) == {"batchItemFailures": []}
        for m in messages:
            aws.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return worked


def start(api: Api, orchestrator: dict[str, Any], input_data: dict[str, Any]) -> dict[str, Any]:
    r = api.call("POST", "/tasks", {"agent_id": orchestrator["id"], "title": "plan", "input_data": input_data})
    assert r.status_code == 202, r.json_body
    return dict(r.json_body)


def get(api: Api, task_id: str) -> dict[str, Any]:
    return dict(api.call("GET", f"/tasks/{task_id}").json_body)


def children(db: Any, parent_id: str) -> dict[str, Task]:
    with db.read() as session:
        rows = session.scalars(select(Task).where(Task.parent_task_id == uuid.UUID(parent_id)))
        return {row.title.split(":")[0]: row for row in rows}


def test_fan_out_with_a_dependency_completes_with_every_output(api: Api, container: Any, aws: Any,
                                                               db: Any) -> None:
    # GIVEN a validator, an examiner and an orchestrator
    api.signup()
    validator = api.agent("validation", name="validator")
    examiner = api.agent("examination", name="examiner")
    boss = api.agent("orchestrator", name="boss")
    plan = [{"step_id": "check", "agent_type": "validation", "input_data": OK_SCHEMA},
            {"step_id": "lint", "agent_id": examiner["id"], "input_data": CODE},
            {"step_id": "recheck", "agent_id": validator["id"], "input_data": OK_SCHEMA,
             "depends_on": ["check", "lint"]}]
    parent = start(api, boss, {"goal": "ship the order service", "plan": plan})

    # WHEN the orchestrator runs: the two independent steps become subtasks, the parent waits
    assert relay_and_consume(container, aws) == ["orchestrator"]
    waiting = get(api, parent["id"])
    assert waiting["status"] == "processing" and waiting["result"] is None
    first = children(db, parent["id"])
    assert set(first) == {"check", "lint"}
    assert first["check"].agent_id == uuid.UUID(validator["id"]) and first["lint"].agent_type == "examination"
    assert get(api, str(first["check"].id))["parent_task_id"] == parent["id"]

    # ... the consumers run them; the dependent step starts only after both completed
    assert sorted(relay_and_consume(container, aws)) == ["examination", "validation"]
    assert set(children(db, parent["id"])) == {"check", "lint", "recheck"}
    assert get(api, parent["id"])["status"] == "processing"
    assert relay_and_consume(container, aws) == ["validation"]

    # THEN the parent completed with every step's output, in plan order
    done = get(api, parent["id"])
    assert done["status"] == "completed", done
    result = done["result"]["output_data"]
    assert result["goal"] == "ship the order service"
    assert [(s["step_id"], s["status"], s["agent_type"]) for s in result["steps"]] == [
        ("check", "completed", "validation"), ("lint", "completed", "examination"),
        ("recheck", "completed", "validation")]
    assert result["steps"][0]["output"]["valid"] is True
    assert [f["name"] for f in result["steps"][1]["output"]["functions"]] == ["total"]
    assert done["result"]["metrics"]["subtasks"] == 3
    assert relay_and_consume(container, aws) == []


def test_a_failed_step_fails_the_parent_and_cancels_the_rest(api: Api, container: Any, aws: Any, db: Any) -> None:
    api.signup()
    api.agent("validation", name="validator")
    boss = api.agent("orchestrator", name="boss")
    plan = [{"step_id": "broken", "agent_type": "validation", "input_data": BAD_SCHEMA},
            {"step_id": "sibling", "agent_type": "validation", "input_data": OK_SCHEMA},
            {"step_id": "after", "agent_type": "validation", "input_data": OK_SCHEMA, "depends_on": ["broken"]}]
    parent = start(api, boss, {"goal": "g", "plan": plan})
    relay_and_consume(container, aws)
    steps = children(db, parent["id"])
    container.relay.run_once()
    # Only the broken step's message is consumed; its sibling is still queued.
    assert run([("b1", message(str(steps["broken"].id)))]) == {"batchItemFailures": []}

    failed = get(api, parent["id"])
    assert failed["status"] == "failed"
    error = failed["error"]
    assert error["code"] == "SUBTASK_FAILED" and error["message"] == "step 'broken' failed"
    assert error["details"]["step_id"] == "broken" and error["details"]["task_id"] == str(steps["broken"].id)
    assert error["details"]["error"]["code"] == "AGENT_INPUT_INVALID"
    sibling = get(api, str(steps["sibling"].id))
    assert sibling["status"] == "cancelled" and sibling["error"]["code"] == "PARENT_FAILED"
    outcome = {s["step_id"]: s["status"] for s in failed["result"]["output_data"]["steps"]}
    assert outcome == {"broken": "failed", "sibling": "cancelled", "after": "not_started"}
    # The sibling's queued message is acknowledged without running it.
    assert run([("s1", message(str(steps["sibling"].id)))]) == {"batchItemFailures": []}
    assert get(api, str(steps["sibling"].id))["status"] == "cancelled"
    assert set(children(db, parent["id"])) == {"broken", "sibling"}


def test_cancelling_a_step_fails_the_parent_and_cancelling_the_parent_cancels_the_steps(
        api: Api, container: Any, aws: Any, db: Any) -> None:
    api.signup()
    api.agent("validation", name="validator")
    boss = api.agent("orchestrator", name="boss")
    plan = [{"step_id": "a", "agent_type": "validation", "input_data": OK_SCHEMA},
            {"step_id": "b", "agent_type": "validation", "input_data": OK_SCHEMA}]
    one = start(api, boss, {"goal": "g", "plan": plan})
    two = start(api, boss, {"goal": "g", "plan": plan})
    relay_and_consume(container, aws)
    a1 = children(db, one["id"])["a"]
    assert api.call("POST", f"/tasks/{a1.id}/cancel").status_code == 200
    parent = get(api, one["id"])
    assert parent["status"] == "failed" and parent["error"]["details"]["status"] == "cancelled"
    assert get(api, str(children(db, one["id"])["b"].id))["status"] == "cancelled"

    assert api.call("POST", f"/tasks/{two['id']}/cancel").json_body["status"] == "cancelled"
    assert {t.status for t in children(db, two["id"]).values()} == {"cancelled"}


def test_a_plan_that_cannot_run_fails_whole_without_subtasks(api: Api, container: Any, aws: Any, db: Any) -> None:
    api.signup()
    boss = api.agent("orchestrator", name="boss")
    validator = api.agent("validation")
    plan = [{"step_id": "ok", "agent_id": validator["id"], "input_data": OK_SCHEMA},
            {"step_id": "nobody", "agent_type": "examination", "input_data": CODE}]
    parent = start(api, boss, {"goal": "g", "plan": plan})
    relay_and_consume(container, aws)
    failed = get(api, parent["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "STEP_AGENT_UNAVAILABLE"
    assert failed["error"]["details"] == {"step_id": "nobody", "agent_type": "examination", "agents": 0,
                                          "active": 0, "at_capacity": 0}
    assert children(db, parent["id"]) == {}
    # A step naming an agent by id gets its input checked when the plan runs.
    wrong = start(api, boss, {"goal": "g", "plan": [{"step_id": "x", "agent_id": validator["id"],
                                                     "input_data": {"source": "print(1)"}}]})
    relay_and_consume(container, aws)
    error = get(api, wrong["id"])["error"]
    assert error["code"] == "STEP_INPUT_INVALID" and error["details"]["step_id"] == "x"


def test_bad_plans_are_422_and_no_plan_without_a_provider_says_what_to_set(api: Api, container: Any,
                                                                           aws: Any) -> None:
    api.signup()
    boss = api.agent("orchestrator", name="boss")
    r = api.call("POST", "/tasks", {"agent_id": boss["id"], "title": "t", "input_data": {
        "goal": "g", "plan": [{"step_id": "a", "agent_type": "validation", "input_data": OK_SCHEMA,
                               "depends_on": ["b"]}]}})
    error = assert_envelope(r, 422, "VALIDATION_ERROR")
    assert "depends on unknown steps: b" in error["details"]["errors"][0]["msg"]
    parent = start(api, boss, {"goal": "sort out the release"})
    relay_and_consume(container, aws)
    failed = get(api, parent["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "PROVIDER_NOT_CONFIGURED"
    assert "input_data.plan" in failed["error"]["message"] and "config.endpoint" in failed["error"]["message"]


@pytest.fixture
def llm(monkeypatch: pytest.MonkeyPatch) -> Iterator[LLMServer]:
    monkeypatch.setenv("YMERA_LLM_KEY_TEST", "sk-integration")
    with LLMServer() as server:
        yield server


def test_with_a_provider_the_orchestrator_drafts_the_plan(api: Api, container: Any, aws: Any, db: Any,
                                                          llm: LLMServer) -> None:
    api.signup()
    api.agent("validation", name="validator")
    r = api.call("POST", "/agents", {"name": "planner", "type": "orchestrator", "config": openai_config(llm)})
    assert r.status_code == 201, r.json_body
    drafted = {"plan": [{"step_id": "validate", "agent_type": "validation", "title": "validate the order",
                         "input_data": OK_SCHEMA}]}
    llm.script(completion("Here is the plan:\n```json\n" + json.dumps(drafted) + "\n```"))
    parent = start(api, r.json_body, {"goal": "check the order payload"})
    relay_and_consume(container, aws)
    system = llm.requests[0]["body"]["messages"][0]
    assert system["role"] == "system" and "- validation:" in system["content"]
    assert get(api, parent["id"])["input_data"]["plan"][0]["step_id"] == "validate"  # stored for the steps
    relay_and_consume(container, aws)
    done = get(api, parent["id"])
    assert done["status"] == "completed" and done["result"]["output_data"]["steps"][0]["output"]["valid"] is True
    # A plan the model gets wrong fails clearly.
    llm.script(completion('{"plan": [{"step_id": "x", "agent_type": "validation", "input_data": {}}]}'))
    bad = start(api, r.json_body, {"goal": "again"})
    relay_and_consume(container, aws)
    assert get(api, bad["id"])["error"]["code"] == "PLAN_INVALID"


class Rendezvous(AgentImpl):
    """A validation agent that waits until both concurrent consumers hold their claimed step."""

    type = "validation"

    def __init__(self, barrier: threading.Barrier) -> None:
        self.barrier = barrier
        self.Input = get_agent("validation").Input  # type: ignore[misc]

    def run(self, data: BaseModel, config: Mapping[str, Any], ctx: AgentContext | None = None) -> AgentOutput:
        self.barrier.wait(timeout=10)
        return AgentOutput(output={"valid": True})


def test_two_last_steps_finishing_at_once_complete_the_parent_exactly_once(api: Api, container: Any, aws: Any,
                                                                           db: Any) -> None:
    api.signup()
    api.agent("validation", name="validator")
    boss = api.agent("orchestrator", name="boss")
    plan = [{"step_id": "left", "agent_type": "validation", "input_data": OK_SCHEMA},
            {"step_id": "right", "agent_type": "validation", "input_data": OK_SCHEMA}]
    parent = start(api, boss, {"goal": "g", "plan": plan})
    relay_and_consume(container, aws)
    steps = children(db, parent["id"])

    # Two consumers, two transactions; both claim their step and finish it together.
    rendezvous = Rendezvous(threading.Barrier(2))
    processor = copy.copy(container.processor)
    processor.agent_loader = lambda t: rendezvous if t == "validation" else get_agent(t)
    outcomes: dict[str, str] = {}
    failures: list[BaseException] = []

    def consume(step: str) -> None:
        try:
            outcomes[step] = processor.process(TaskMessage(task_id=steps[step].id, agent_type="validation")).status
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread below
            failures.append(exc)

    threads = [threading.Thread(target=consume, args=(step,)) for step in ("left", "right")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not failures and outcomes == {"left": "completed", "right": "completed"}

    done = get(api, parent["id"])
    assert done["status"] == "completed", done
    assert [s["status"] for s in done["result"]["output_data"]["steps"]] == ["completed", "completed"]
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(TaskResult)
                              .where(TaskResult.task_id == uuid.UUID(parent["id"]))) == 1
