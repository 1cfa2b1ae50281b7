"""An `engine: "analytics"` workflow step feeding a `validation` step runs to `succeeded` (moto, consumers
in-process), and the analytics it computed counts the run it ran inside."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from tests.integration.workflow_support import WorkflowHarness, harness, make_agent, make_user, wf_aws, wf_container

__all__ = ["harness", "wf_aws", "wf_container"]

FIGURES = {"type": "object", "required": ["scope", "tasks", "runs", "series"],
           "properties": {"scope": {"const": "own"},
                          "tasks": {"type": "object", "required": ["total", "by_status"]},
                          "runs": {"type": "object", "required": ["total"]}}}


def test_an_analytics_step_feeding_a_validation_step_runs_to_succeeded(harness: WorkflowHarness) -> None:
    user = make_user(harness.db)
    make_agent(harness.db, user)
    now = datetime.now(timezone.utc)
    version = harness.create(user, {"steps": [
        {"step_id": "stats", "engine": "analytics", "input_data": {"from": "$.input.from", "bucket": "hour"}},
        {"step_id": "check", "agent_type": "validation", "depends_on": ["stats"],
         "input_data": {"schema": FIGURES, "payload": "$.steps.stats.output"}}]})
    run_id = harness.start(user, version, {"from": (now - timedelta(hours=2)).isoformat()})
    harness.drive(lambda: harness.status(run_id) not in ("running", "waiting_approval"))
    assert harness.status(run_id) == "succeeded", harness.describe()
    steps = harness.steps(run_id)
    assert steps["check"].output["valid"] is True, steps["check"].output
    stats = steps["stats"].output
    assert stats["scope"] == "own"
    assert stats["runs"]["by_status"] == {"running": 1}  # the run asking, counted while it ran
    assert len(stats["series"]) == 3  # from two hours ago, by the hour, up to now
