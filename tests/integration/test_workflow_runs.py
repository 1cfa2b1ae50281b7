"""Workflow runs end to end on the embedded moto (execution on), driving the real consumers in-process."""

from __future__ import annotations

import uuid
from typing import Any

from chalicelib.db.workflow_models import RunStep
from tests.integration.workflow_support import WorkflowHarness, harness, make_agent, make_user, wf_aws, wf_container

__all__ = ["harness", "wf_aws", "wf_container"]

SCHEMA = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}


def check(payload: Any, ref: str | None = None) -> dict[str, Any]:
    """A validation step's input: the payload (or a reference to it) against SCHEMA."""
    return {"schema": SCHEMA, "payload": ref if ref is not None else payload}


def test_a_two_step_sequence_runs_to_succeeded(harness: WorkflowHarness) -> None:
    user = make_user(harness.db)
    make_agent(harness.db, user)
    version = harness.create(user, {"steps": [
        {"step_id": "a", "agent_type": "validation", "input_data": check(None, "$.input.doc")},
        {"step_id": "b", "agent_type": "validation", "depends_on": ["a"],
         "input_data": check(None, "$.steps.a.output")}]})
    run_id = harness.start(user, version, {"doc": {"name": "x"}})
    harness.drive(lambda: harness.status(run_id) not in ("running", "waiting_approval"))
    run = harness.run(run_id)
    assert run.status == "succeeded", harness.describe()
    steps = harness.steps(run_id)
    assert steps["a"].status == steps["b"].status == "succeeded"
    assert steps["a"].output == {"valid": True, "errors": []} or steps["a"].output["valid"] is True
    assert run.output is not None and set(run.output["steps"]) == {"b"}
    assert harness.task_counts(run_id) == {"a": 1, "b": 1}


def _max_in_flight(harness: WorkflowHarness, run_id: uuid.UUID, step_id: str) -> int:
    """The most item tasks of a step that existed unfinished at once (created, not yet completed)."""
    from sqlalchemy import select

    from chalicelib.db.models import Task

    with harness.db.read() as s:
        spans = s.execute(select(Task.created_at, Task.completed_at).where(Task.run_id == run_id,
                                                                           Task.step_id == step_id)).all()
    return max(sum(1 for c, d in spans if c <= t and (d is None or t < d)) for t, _ in spans)


def test_parallel_group_skips_fan_out_and_approval_run_to_succeeded(harness: WorkflowHarness) -> None:
    user = make_user(harness.db)
    make_agent(harness.db, user)
    items = [{"name": f"n{i}"} for i in range(5)]
    version = harness.create(user, {"steps": [
        {"step_id": "a", "agent_type": "validation", "input_data": check(None, "$.input.doc")},
        # a parallel group of three: b runs, c is skipped by its condition, d runs
        {"step_id": "b", "agent_type": "validation", "depends_on": ["a"], "input_data": check({"name": "b"})},
        {"step_id": "c", "agent_type": "validation", "depends_on": ["a"], "input_data": check({"name": "c"}),
         "when": {"path": "$.steps.a.output.valid", "equals": False}},
        {"step_id": "d", "agent_type": "validation", "depends_on": ["a"], "input_data": check({"name": "d"})},
        # only on the skipped step: skipped too
        {"step_id": "after_c", "agent_type": "validation", "depends_on": ["c"], "input_data": check({"name": "e"})},
        {"step_id": "fan", "agent_type": "validation", "depends_on": ["b", "d"], "for_each": "$.input.items",
         "max_concurrency": 2, "input_data": check(None, "$.item")},
        {"step_id": "gate", "type": "approval", "depends_on": ["fan", "after_c"], "timeout_seconds": 600},
    ]})
    run_id = harness.start(user, version, {"doc": {"name": "x"}, "items": items})
    harness.drive(lambda: harness.steps(run_id)["gate"].status == "waiting_approval")
    assert harness.status(run_id) == "waiting_approval"
    harness.approve(run_id, "gate")
    harness.drive(lambda: harness.status(run_id) not in ("running", "waiting_approval"))

    run, steps = harness.run(run_id), harness.steps(run_id)
    assert run.status == "succeeded", harness.describe()
    assert {k: v.status for k, v in steps.items()} == {
        "a": "succeeded", "b": "succeeded", "c": "skipped", "d": "succeeded", "after_c": "skipped",
        "fan": "succeeded", "gate": "succeeded"}
    assert steps["c"].output == {"skipped": "condition"} and steps["after_c"].output == {"skipped": "dependencies"}
    assert harness.task_counts(run_id) == {"a": 1, "b": 1, "d": 1, "fan": 5}  # skipped steps made no task
    assert steps["fan"].items == items and steps["fan"].items_total == 5 and steps["fan"].items_failed == 0
    assert _max_in_flight(harness, run_id, "fan") <= 2
    assert harness.execution_status(run_id) == "SUCCEEDED"
    assert run.output is not None and run.output["steps"]["gate"]["approved"] is True


def test_a_for_each_steps_output_is_its_items_outputs_in_order(harness: WorkflowHarness) -> None:
    user = make_user(harness.db)
    make_agent(harness.db, user)
    items = [{"name": "ok"}, {"name": 3}, {"name": "ok2"}]
    version = harness.create(user, {"steps": [
        {"step_id": "fan", "agent_type": "validation", "for_each": "$.input.items", "max_concurrency": 3,
         "input_data": check(None, "$.item")},
        {"step_id": "sum", "agent_type": "validation", "depends_on": ["fan"],
         "input_data": {"schema": {"type": "array", "maxItems": 3}, "payload": "$.steps.fan.output.items"}}]})
    run_id = harness.start(user, version, {"items": items})
    harness.drive(lambda: harness.status(run_id) != "running")
    assert harness.status(run_id) == "succeeded", harness.describe()
    from sqlalchemy import select

    from chalicelib.db.models import Task, TaskResult

    with harness.db.read() as s:
        sum_input = s.scalar(select(Task.input_data).where(Task.run_id == run_id, Task.step_id == "sum"))
    assert [o["valid"] for o in sum_input["payload"]] == [True, False, True]  # in item order
    assert harness.steps(run_id)["sum"].output["valid"] is True
    _ = TaskResult


def test_a_step_that_times_out_fails_the_run_with_its_error(harness: WorkflowHarness) -> None:
    user = make_user(harness.db)
    make_agent(harness.db, user)
    make_agent(harness.db, user, "examination", mode="external")  # its task waits for a worker that never comes
    version = harness.create(user, {"steps": [
        {"step_id": "a", "agent_type": "validation", "input_data": check({"name": "x"})},
        {"step_id": "slow", "agent_type": "examination", "depends_on": ["a"], "timeout_seconds": 2,
         "input_data": {"source": "x = 1\n"}}]})
    run_id = harness.start(user, version)
    harness.drive(lambda: harness.status(run_id) != "running", timeout=30)
    run, steps = harness.run(run_id), harness.steps(run_id)
    assert run.status == "failed", harness.describe()
    assert run.error is not None and run.error["code"] in ("STEP_TIMED_OUT", "STEP_HEARTBEAT_TIMED_OUT")
    assert run.error["details"]["timed_out_steps"] == ["slow"]
    assert steps["a"].status == "succeeded"
    assert steps["slow"].status == "failed" and steps["slow"].error["code"] == run.error["code"]
    from sqlalchemy import select

    from chalicelib.db.models import Task

    with harness.db.read() as s:  # the step's task, never picked up, is cancelled with its run
        assert s.scalar(select(Task.status).where(Task.run_id == run_id, Task.step_id == "slow")) == "cancelled"


def test_cancel_stops_the_run_and_its_open_tasks(harness: WorkflowHarness) -> None:
    user = make_user(harness.db)
    make_agent(harness.db, user, "examination", mode="external")
    version = harness.create(user, {"steps": [
        {"step_id": "wait", "agent_type": "examination", "input_data": {"source": "x = 1\n"}},
        {"step_id": "never", "agent_type": "examination", "depends_on": ["wait"],
         "input_data": {"source": "y = 2\n"}}]})
    run_id = harness.start(user, version)
    harness.drive(lambda: harness.steps(run_id)["wait"].status == "running")
    harness.cancel(run_id)
    harness.drive(lambda: harness.execution_status(run_id) != "RUNNING")
    run, steps = harness.run(run_id), harness.steps(run_id)
    assert run.status == "cancelled"  # the execution's failure report does not turn it into "failed"
    assert steps["wait"].status == "cancelled" and steps["never"].status == "cancelled"
    assert harness.task_counts(run_id) == {"wait": 1}
    from sqlalchemy import select

    from chalicelib.db.models import Task

    with harness.db.read() as s:
        assert s.scalar(select(Task.status).where(Task.run_id == run_id)) == "cancelled"
    # Ended either way: StopExecution (ABORTED) or, where the endpoint ignores it, its token failed with
    # Ymera.RunCancelled (FAILED) — whichever the emulator applied first.
    assert harness.execution_status(run_id) in ("ABORTED", "FAILED")


def test_redrive_after_a_failure_reruns_only_the_failed_step(harness: WorkflowHarness) -> None:
    from chalicelib.agents.registry import get_agent
    from chalicelib.errors import AgentError

    user = make_user(harness.db)
    make_agent(harness.db, user)
    broken = {"on": True}
    real = get_agent("validation")

    class Flaky:
        Input = real.Input
        Config = real.Config

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def run(self, data: Any, config: Any, ctx: Any) -> Any:
            if broken["on"] and data.model_dump(mode="json").get("payload") == {"name": "b"}:
                raise AgentError("broken for now", {})
            return real.run(data, config, ctx)

    harness.c.processor.agent_loader = lambda t: Flaky() if t == "validation" else get_agent(t)  # type: ignore
    version = harness.create(user, {"steps": [
        {"step_id": "a", "agent_type": "validation", "input_data": check({"name": "a"})},
        {"step_id": "b", "agent_type": "validation", "depends_on": ["a"], "input_data": check({"name": "b"})},
        {"step_id": "c", "agent_type": "validation", "depends_on": ["b"],
         "input_data": check(None, "$.steps.a.output")}]})
    run_id = harness.start(user, version)
    harness.drive(lambda: harness.status(run_id) != "running")
    run = harness.run(run_id)
    assert run.status == "failed", harness.describe()
    assert run.error is not None and run.error["code"] == "STEP_FAILED"
    assert run.error["details"]["failed_steps"] == ["b"]
    assert harness.task_counts(run_id) == {"a": 1, "b": 1}

    broken["on"] = False
    harness.redrive(run_id)
    harness.drive(lambda: harness.status(run_id) != "running")
    assert harness.status(run_id) == "succeeded", harness.describe()
    assert harness.task_counts(run_id) == {"a": 1, "b": 2, "c": 1}  # a was short-circuited, not re-run
    assert harness.steps(run_id)["b"].status == "succeeded"


def test_the_runtime_never_crosses_users(harness: WorkflowHarness) -> None:
    from sqlalchemy import select

    from chalicelib.db.models import Task

    alice, bob = make_user(harness.db), make_user(harness.db)
    mine = make_agent(harness.db, alice)
    bobs = make_agent(harness.db, bob)
    # Bob's agent in Alice's workflow is refused at create time (API); written directly, the runtime refuses it too.
    version = harness.create_unchecked(alice, {"steps": [
        {"step_id": "typed", "agent_type": "validation", "input_data": check({"name": "x"})},
        {"step_id": "by_id", "agent_id": str(bobs), "depends_on": ["typed"], "input_data": check({"name": "x"})}]},
        step_types={"by_id": "validation"})
    run_id = harness.start(alice, version)
    harness.drive(lambda: harness.status(run_id) != "running")
    steps = harness.steps(run_id)
    assert steps["typed"].status == "succeeded"
    assert steps["by_id"].status == "failed" and steps["by_id"].error["code"] == "STEP_AGENT_UNAVAILABLE"
    with harness.db.read() as s:
        rows = s.execute(select(Task.user_id, Task.agent_id).where(Task.run_id == run_id)).all()
        assert rows == [(alice, mine)]  # one task, Alice's, on Alice's agent
        assert s.scalar(select(Task.id).where(Task.agent_id == bobs)) is None
    _ = RunStep


def test_a_retried_step_gets_a_new_task_per_attempt_and_heartbeats_on_claim(harness: WorkflowHarness,
                                                                           monkeypatch: Any) -> None:
    from chalicelib.agents.registry import get_agent
    from chalicelib.errors import AgentError

    user = make_user(harness.db)
    make_agent(harness.db, user)
    real, runs = get_agent("validation"), {"n": 0}

    class FailsOnce:
        Input = real.Input
        Config = real.Config

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def run(self, data: Any, config: Any, ctx: Any) -> Any:
            runs["n"] += 1
            if runs["n"] == 1:
                raise AgentError("first attempt fails", {})
            return real.run(data, config, ctx)

    beats: list[str] = []
    callbacks = harness.c.callbacks
    monkeypatch.setattr(callbacks, "heartbeat", lambda token: beats.append(token) or "ok")
    harness.c.processor.agent_loader = lambda t: FailsOnce() if t == "validation" else get_agent(t)  # type: ignore
    workflow = harness.create(user, {"steps": [
        {"step_id": "a", "agent_type": "validation", "input_data": check({"name": "a"}),
         "retry": {"max_attempts": 2, "backoff_seconds": 1}}]})
    run_id = harness.start(user, workflow)
    harness.drive(lambda: harness.status(run_id) != "running")
    assert harness.status(run_id) == "succeeded", harness.describe()
    assert harness.task_counts(run_id) == {"a": 2}  # one task per attempt
    assert harness.steps(run_id)["a"].attempts == 2
    assert len(beats) == 2  # one heartbeat as each attempt's task was claimed


def test_an_external_agents_step_is_leased_and_its_completion_answers_the_token(harness: WorkflowHarness) -> None:
    from chalicelib.schemas.workers import CompleteRequest

    user = make_user(harness.db)
    worker = make_agent(harness.db, user, "examination", mode="external")
    make_agent(harness.db, user)
    workflow = harness.create(user, {"steps": [
        {"step_id": "outside", "agent_type": "examination", "input_data": {"source": "x = 1\n"}},
        {"step_id": "after", "agent_type": "validation", "depends_on": ["outside"],
         "input_data": {"schema": {"type": "object"}, "payload": "$.steps.outside.output"}}]})
    run_id = harness.start(user, workflow)
    harness.drive(lambda: harness.steps(run_id)["outside"].status == "running")
    leased = harness.c.leases.lease(worker, 1, 0).tasks
    assert len(leased) == 1 and leased[0].input_data["source"] == "x = 1\n"
    harness.c.workers.complete(leased[0].id, worker, CompleteRequest(output_data={"lines": 1}))
    harness.drive(lambda: harness.status(run_id) != "running")
    assert harness.status(run_id) == "succeeded", harness.describe()
    assert harness.steps(run_id)["outside"].output == {"lines": 1}
    assert harness.task_counts(run_id) == {"outside": 1, "after": 1}
