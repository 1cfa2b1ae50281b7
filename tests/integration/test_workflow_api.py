"""Workflows over the API: create (every violation at once), read with ASL, versions, list pages, soft delete,
ownership. Real Postgres, Redis and moto (Step Functions execution on)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from chalicelib.config import Settings
from chalicelib.db.models import AuditLog
from chalicelib.db.workflow_models import Workflow, WorkflowVersion
from tests.integration.conftest import PREFIX, Api
from tests.integration.test_api_auth import assert_envelope

ROLE_ARN = "arn:aws:iam::123456789012:role/ymera-test-workflow"
CONTROL_QUEUE = f"{PREFIX}-workflow-control"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto in-process with Step Functions execution on, the manifest's queues and the control queue."""
    import boto3
    from moto import mock_aws

    from infra.bootstrap import bootstrap

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        sqs = boto3.client("sqs", region_name="us-east-1")
        bootstrap(sqs, PREFIX, visibility_timeout=1)
        sqs.create_queue(QueueName=CONTROL_QUEUE)  # idempotent: the manifest may already have it
        yield sqs


@pytest.fixture
def settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("YMERA_WORKFLOW_ROLE_ARN", ROLE_ARN)
    return Settings()


def task_step(step_id: str, *depends_on: str, **extra: Any) -> dict[str, Any]:
    return {"step_id": step_id, "agent_type": "validation", "depends_on": list(depends_on),
            "input_data": {"schema": {"type": "object"}, "payload": {"n": 1}}, **extra}


def approval_step(step_id: str, *depends_on: str) -> dict[str, Any]:
    return {"step_id": step_id, "type": "approval", "depends_on": list(depends_on), "timeout_seconds": 3600,
            "input_schema": {"type": "object", "required": ["reviewer"],
                             "properties": {"reviewer": {"type": "string"}}}}


def definition(name: str = "pipeline", **extra: Any) -> dict[str, Any]:
    return {"name": name, "description": "check, approve, check again",
            "input_schema": {"type": "object", "required": ["doc"], "properties": {"doc": {"type": "string"}}},
            "steps": [task_step("check"), approval_step("gate", "check"), task_step("final", "gate")], **extra}


def create_workflow(api: Api, body: dict[str, Any] | None = None) -> dict[str, Any]:
    r = api.call("POST", "/workflows", body or definition())
    assert r.status_code == 201, r.json_body
    return dict(r.json_body)


def step_index(path: str) -> int | None:
    """The step a violation path points into, whatever the separator style (steps[2].x, steps.2.x, /steps/2)."""
    found = re.search(r"steps\W*(\d+)", path)
    return int(found.group(1)) if found else None


def test_create_returns_the_definition_the_asl_and_version_1(api: Api, db: Any) -> None:
    api.signup()
    r = api.call("POST", "/workflows", definition())
    assert r.status_code == 201, r.json_body
    body = r.json_body
    assert r.headers["Location"] == f"/workflows/{body['id']}"
    assert body["version"] == body["current_version"] == 1
    assert [s["step_id"] for s in body["definition"]["steps"]] == ["check", "gate", "final"]
    assert body["asl"]["States"] and "StartAt" in body["asl"]
    text = str(body["asl"])
    assert "${AgentQueueUrl:validation}" in text and "123456789012" not in text  # placeholders, no account id
    got = api.call("GET", f"/workflows/{body['id']}").json_body
    assert got["asl"] == body["asl"] and got["definition"] == body["definition"]
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(WorkflowVersion)) == 1
        events = set(session.scalars(select(AuditLog.event_type)))
    assert "workflow.created" in events


def test_every_violation_is_listed_with_its_path(api: Api, other_api: Api) -> None:
    other_api.signup()
    foreign = other_api.agent()  # user B's agent: unknown to user A
    api.signup()
    body = definition(steps=[
        task_step("a", "nope"),
        {"step_id": "b", "agent_type": "no-such-type", "input_data": {}},
        {"step_id": "c", "agent_id": foreign["id"], "input_data": {}, "depends_on": ["a"]},
    ])
    error = assert_envelope(api.call("POST", "/workflows", body), 422, "WORKFLOW_INVALID")
    violations = error["details"]["violations"]
    assert all(set(v) == {"path", "code", "message"} for v in violations)
    by_step = {step_index(v["path"]) for v in violations}
    assert {0, 1, 2} <= by_step, violations  # the unknown dependency, the unknown type, B's agent
    assert any(v["code"] == "UNKNOWN_AGENT" and step_index(v["path"]) == 2 for v in violations)


def test_field_errors_are_violations_too_all_at_once(api: Api) -> None:
    api.signup()
    body = definition(steps=[{"step_id": "a"}, {"step_id": "b", "agent_type": "validation", "engine": "x"},
                             {"step_id": "bad.id", "agent_type": "validation"}])
    error = assert_envelope(api.call("POST", "/workflows", body), 422, "WORKFLOW_INVALID")
    assert {step_index(v["path"]) for v in error["details"]["violations"]} == {0, 1, 2}
    assert_envelope(api.call("POST", "/workflows", raw="[1]"), 400, "BAD_REQUEST")


def test_put_writes_a_new_version_and_keeps_the_old(api: Api, db: Any) -> None:
    api.signup()
    wf = create_workflow(api)
    changed = definition(name="renamed", steps=[task_step("only")])
    r = api.call("PUT", f"/workflows/{wf['id']}", changed)
    assert r.status_code == 200, r.json_body
    assert r.json_body["version"] == r.json_body["current_version"] == 2 and r.json_body["name"] == "renamed"
    assert [s["step_id"] for s in r.json_body["definition"]["steps"]] == ["only"]
    assert r.json_body["version_id"] != wf["version_id"]
    with db.read() as session:
        versions = {v.version: v for v in session.scalars(select(WorkflowVersion))}
    assert sorted(versions) == [1, 2]
    assert [s["step_id"] for s in versions[1].definition["steps"]] == ["check", "gate", "final"]
    bad = assert_envelope(api.call("PUT", f"/workflows/{wf['id']}", definition(steps=[task_step("x", "y")])),
                          422, "WORKFLOW_INVALID")
    assert bad["details"]["violations"]
    assert api.call("GET", f"/workflows/{wf['id']}").json_body["current_version"] == 2


def test_list_pages_newest_first_and_hides_deleted_and_plans(api: Api, db: Any) -> None:
    user = api.signup()
    ids = [create_workflow(api, definition(name=f"wf{i}"))["id"] for i in range(5)]
    deleted = ids.pop(2)
    assert api.call("DELETE", f"/workflows/{deleted}").status_code == 204
    with db.transaction() as session:  # an orchestrator plan of the same user: never listed
        owner = session.scalar(select(Workflow.user_id).where(Workflow.id == uuid.UUID(ids[0])))
        session.add(Workflow(user_id=owner, name="plan", kind="plan"))
    assert owner is not None and user
    seen: list[str] = []
    cursor = None
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = api.call("GET", f"/workflows{query}").json_body
        assert len(page["items"]) <= 2
        seen += [w["id"] for w in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    assert_envelope(api.call("GET", "/workflows?cursor=garbage"), 422, "VALIDATION_ERROR")


def test_soft_delete_hides_it_everywhere_and_refuses_new_runs(api: Api, db: Any) -> None:
    api.signup()
    wf = create_workflow(api)
    assert api.call("DELETE", f"/workflows/{wf['id']}").status_code == 204
    with db.read() as session:
        row = session.get(Workflow, uuid.UUID(wf["id"]))
        assert row is not None and row.deleted_at is not None  # kept: its runs still point at it
        assert "workflow.deleted" in set(session.scalars(select(AuditLog.event_type)))
    for method, path in (("GET", ""), ("PUT", ""), ("DELETE", ""), ("GET", "/runs")):
        body = definition() if method == "PUT" else None
        assert_envelope(api.call(method, f"/workflows/{wf['id']}{path}", body), 404, "WORKFLOW_NOT_FOUND")
    assert_envelope(api.call("POST", f"/workflows/{wf['id']}/runs", {"input": {"doc": "x"}}), 404,
                    "WORKFLOW_NOT_FOUND")


def test_another_users_workflow_is_404_everywhere(api: Api, other_api: Api) -> None:
    api.signup()
    wf = create_workflow(api)
    other_api.signup()
    for method, path, body in (("GET", "", None), ("PUT", "", definition()), ("DELETE", "", None),
                               ("GET", "/runs", None), ("POST", "/runs", {"input": {"doc": "x"}})):
        assert_envelope(other_api.call(method, f"/workflows/{wf['id']}{path}", body), 404, "WORKFLOW_NOT_FOUND")
    assert other_api.call("GET", "/workflows").json_body["items"] == []
    assert_envelope(other_api.call("GET", "/workflows/not-a-uuid"), 404, "WORKFLOW_NOT_FOUND")
    assert api.call("GET", f"/workflows/{wf['id']}").status_code == 200  # still there for its owner
