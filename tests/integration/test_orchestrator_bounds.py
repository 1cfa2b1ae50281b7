"""Orchestration is bounded: plans do not nest, a task tree has a depth limit and a size cap (a plan's steps are
tasks of its workflow run and subtasks of the orchestrator task, so the tree counts them)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import func, select, update

from chalicelib.db.models import Task
from tests.integration.conftest import Api
from tests.integration.orchestrator_support import (
    OK_SCHEMA,
    children,
    finish,
    get,
    harness,
    plan_run,
    start,
    wf_api,
    wf_aws,
    wf_container,
)
from tests.integration.test_api_auth import assert_envelope
from tests.integration.test_orchestrator import llm  # noqa: F401
from tests.integration.workflow_support import WorkflowHarness
from tests.llm_server import LLMServer, completion, openai_config

__all__ = ["harness", "wf_api", "wf_aws", "wf_container"]


def test_a_submitted_plan_with_an_orchestrator_step_is_refused_at_post_tasks(api: Api, container: Any) -> None:
    api.signup()
    boss = api.agent("orchestrator", name="boss")
    r = api.call("POST", "/tasks", {"agent_id": boss["id"], "title": "t", "input_data": {
        "goal": "g", "plan": [{"step_id": "inner", "agent_type": "orchestrator",
                               "input_data": {"goal": "again", "plan": [{"step_id": "x", "agent_type": "validation",
                                                                         "input_data": OK_SCHEMA}]}}]}})
    error = assert_envelope(r, 422, "VALIDATION_ERROR")
    assert "ORCHESTRATOR_STEP_FORBIDDEN" in json.dumps(error["details"])


def test_a_step_naming_an_orchestrator_agent_fails_the_task_and_starts_nothing(wf_api: Api,
                                                                               harness: WorkflowHarness) -> None:
    api, db = wf_api, harness.db
    api.signup()
    api.agent("validation", name="validator")
    boss = api.agent("orchestrator", name="boss")
    inner = api.agent("orchestrator", name="inner")
    parent = start(api, boss, {"goal": "g", "plan": [
        {"step_id": "ok", "agent_type": "validation", "input_data": OK_SCHEMA},
        {"step_id": "nested", "agent_id": inner["id"], "input_data": {"goal": "again"}}]})
    failed = finish(harness, api, parent["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "ORCHESTRATOR_STEP_FORBIDDEN", failed["error"]
    assert failed["error"]["details"]["step_id"] == "nested"
    assert children(db, parent["id"]) == {} and plan_run(db, parent["id"]) is None


def test_a_drafted_plan_with_an_orchestrator_step_fails_clearly(wf_api: Api, harness: WorkflowHarness,
                                                                llm: LLMServer) -> None:  # noqa: F811
    api, db = wf_api, harness.db
    api.signup()
    api.agent("validation", name="validator")
    r = api.call("POST", "/agents", {"name": "planner", "type": "orchestrator", "config": openai_config(llm)})
    assert r.status_code == 201, r.json_body
    llm.script(completion(json.dumps({"plan": [
        {"step_id": "again", "agent_type": "orchestrator", "input_data": {"goal": "recurse"}}]})))
    parent = start(api, r.json_body, {"goal": "loop forever"})
    failed = finish(harness, api, parent["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "ORCHESTRATOR_STEP_FORBIDDEN"
    assert failed["error"]["details"]["step_ids"] == ["again"]
    assert children(db, parent["id"]) == {}


def _chain_above(db: Any, task_id: str, tasks: list[str]) -> None:
    """Make `tasks` the parent chain of `task_id` (nearest first), as nested orchestration would have."""
    links = [task_id, *tasks]
    with db.transaction() as session:
        for child, parent in zip(links, links[1:], strict=False):
            session.execute(update(Task).where(Task.id == uuid.UUID(child)).values(parent_task_id=uuid.UUID(parent)))


def test_an_orchestrator_too_deep_in_a_task_tree_starts_nothing(wf_api: Api, harness: WorkflowHarness) -> None:
    from chalicelib.schemas.tasks import TaskMessage

    api, db, container = wf_api, harness.db, harness.c
    api.signup()
    validator = api.agent("validation", name="validator")
    boss = api.agent("orchestrator", name="boss")
    plan = {"goal": "g", "plan": [{"step_id": "ok", "agent_type": "validation", "input_data": OK_SCHEMA}]}
    shallow, deep = start(api, boss, plan), start(api, boss, plan)
    ancestors = [start(api, validator, OK_SCHEMA)["id"] for _ in range(5)]
    _chain_above(db, shallow["id"], ancestors[:2])  # depth 2: its steps would be at depth 3, the limit
    _chain_above(db, deep["id"], ancestors[2:])  # depth 3: its steps would be at depth 4
    for task in (shallow, deep):
        container.processor.process(TaskMessage(task_id=uuid.UUID(task["id"]), agent_type="orchestrator"))
    assert get(api, shallow["id"])["status"] == "processing" and plan_run(db, shallow["id"]) is not None
    # its step runs at depth 3, under the orchestrator task
    assert finish(harness, api, shallow["id"])["status"] == "completed" and set(children(db, shallow["id"])) == {"ok"}
    too_deep = get(api, deep["id"])
    assert too_deep["status"] == "failed" and too_deep["error"]["code"] == "ORCHESTRATION_TOO_DEEP"
    assert too_deep["error"]["details"] == {"depth": 4, "max_depth": 3}
    assert children(db, deep["id"]) == {} and plan_run(db, deep["id"]) is None


def test_a_root_task_tree_has_a_size_cap(wf_api: Api, harness: WorkflowHarness) -> None:
    api, db, container = wf_api, harness.db, harness.c
    container.settings = container.settings.model_copy(update={"orchestrator_max_descendants": 2})
    api.signup()
    api.agent("validation", name="validator")
    boss = api.agent("orchestrator", name="boss")
    steps = [{"step_id": f"s{i}", "agent_type": "validation", "input_data": OK_SCHEMA} for i in range(3)]
    parent = start(api, boss, {"goal": "g", "plan": steps})
    failed = finish(harness, api, parent["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "ORCHESTRATION_TOO_LARGE"
    assert failed["error"]["details"]["max_descendants"] == 2
    small = start(api, boss, {"goal": "g", "plan": steps[:2]})
    assert finish(harness, api, small["id"])["status"] == "completed"
    assert len(children(db, small["id"])) == 2
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(Task)
                              .where(Task.parent_task_id == uuid.UUID(parent["id"]))) == 0
