"""Feedback over the API and the learning agent: ratings become each agent's quality estimate, exactly once."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from chalicelib.db.models import Agent, TaskFeedback
from chalicelib.db.types import utcnow
from chalicelib.engines.learning import sweep
from chalicelib.services.learning import fold_feedback
from tests.integration.conftest import Api
from tests.integration.test_api_auth import assert_envelope
from tests.integration.test_api_tasks import create_task
from tests.integration.test_consumer import message, run


def finished_task(api: Api, agent_id: str) -> str:
    task = create_task(api, agent_id).json_body
    assert run([(f"m-{task['id']}", message(task["id"]))]) == {"batchItemFailures": []}
    return str(task["id"])


def rate(api: Api, task_id: str, rating: int, comment: str | None = None) -> Any:
    return api.call("POST", f"/tasks/{task_id}/feedback", {"rating": rating, "comment": comment})


def run_learning(task_id: str, mid: str = "l1") -> dict[str, Any]:
    return run([(mid, message(task_id, "learning"))], "learning")


def test_a_rating_reaches_the_agents_quality_through_the_learning_agent(api: Api) -> None:
    # GIVEN a validation agent with a finished task, and a learning agent
    api.signup()
    validator = api.agent("validation")
    api.agent("learning", name="learner")
    task_id = finished_task(api, validator["id"])
    assert api.call("GET", f"/agents/{validator['id']}").json_body["quality"] == {
        "mean": 0.5, "alpha": 1.0, "beta": 1.0, "updated_at": None}  # (and now cached)

    # WHEN the owner rates the result 5 stars
    r = rate(api, task_id, 5, "exactly what I needed")
    assert r.status_code == 201, r.json_body
    feedback = r.json_body
    assert r.headers["Location"] == f"/tasks/{task_id}/feedback"
    assert feedback["rating"] == 5 and feedback["processed_at"] is None and feedback["agent_id"] == validator["id"]
    learning_task = api.call("GET", f"/tasks/{feedback['learning_task_id']}").json_body
    assert learning_task["agent_type"] == "learning" and learning_task["status"] == "queued"
    assert learning_task["input_data"] == {"feedback_ids": [feedback["id"]]}

    # THEN the learning task counts it: Beta(1, 1) + one full success = Beta(2, 1)
    assert run_learning(learning_task["id"]) == {"batchItemFailures": []}
    done = api.call("GET", f"/tasks/{learning_task['id']}").json_body
    assert done["status"] == "completed", done
    output = done["result"]["output_data"]
    assert output["counted"] == 1 and output["already_counted"] == []
    [agent] = output["agents"]
    assert agent["agent_id"] == validator["id"] and agent["feedback_count"] == 1 and agent["ratings"] == [5]
    assert agent["before"] == {"mean": 0.5, "alpha": 1.0, "beta": 1.0, "evidence": 0.0}
    assert agent["after"] == {"mean": 0.666667, "alpha": 2.0, "beta": 1.0, "evidence": 1.0}
    quality = api.call("GET", f"/agents/{validator['id']}").json_body["quality"]  # the cache was invalidated
    assert (quality["alpha"], quality["beta"]) == (2.0, 1.0) and quality["mean"] == 2 / 3
    assert quality["updated_at"] is not None
    assert api.call("GET", f"/tasks/{task_id}/feedback").json_body["processed_at"] is not None


def test_counting_is_idempotent(api: Api) -> None:
    api.signup()
    validator = api.agent("validation")
    api.agent("learning", name="learner")
    feedback = rate(api, finished_task(api, validator["id"]), 1).json_body
    learning_id = feedback["learning_task_id"]
    assert run_learning(learning_id, "l1") == {"batchItemFailures": []}
    assert run_learning(learning_id, "l2") == {"batchItemFailures": []}  # a duplicate delivery: not re-run
    # A second learning task naming the same rating reports it as already counted.
    again = api.call("POST", "/tasks", {"agent_type": "learning", "title": "again",
                                        "input_data": {"feedback_ids": [feedback["id"]]}}).json_body
    assert run_learning(again["id"], "l3") == {"batchItemFailures": []}
    output = api.call("GET", f"/tasks/{again['id']}").json_body["result"]["output_data"]
    assert output == {"counted": 0, "already_counted": [feedback["id"]], "half_life_days": 30.0, "agents": []}
    quality = api.call("GET", f"/agents/{validator['id']}").json_body["quality"]
    assert (quality["alpha"], quality["beta"]) == (1.0, 2.0)  # one failure, counted once


def test_without_a_learning_agent_the_sweep_counts_it_with_decay(api: Api, container: Any, db: Any) -> None:
    # GIVEN an agent whose estimate Beta(5, 3) was last updated exactly one half-life ago
    api.signup()
    validator = api.agent("validation")
    now = utcnow()
    with db.transaction() as session:
        session.execute(update(Agent).where(Agent.id == uuid.UUID(validator["id"]))
                        .values(quality_alpha=5.0, quality_beta=3.0, quality_updated_at=now - timedelta(days=30)))
    # WHEN a 2-star rating arrives (no learning agent: nobody is sent a task) and the sweep runs
    feedback = rate(api, finished_task(api, validator["id"]), 2).json_body
    assert feedback["learning_task_id"] is None
    assert sweep(container, now=now) == {"feedback_counted": 1, "agent_updates": 1}
    # THEN the old evidence halves toward Beta(1, 1) -> Beta(3, 2), then +0.25 success, +0.75 failure
    with db.read() as session:
        agent = session.get(Agent, uuid.UUID(validator["id"]))
        assert (agent.quality_alpha, agent.quality_beta, agent.quality_updated_at) == (3.25, 2.75, now)
    assert sweep(container, now=now) == {"feedback_counted": 0, "agent_updates": 0}


def test_two_folders_at_once_count_a_rating_once(api: Api, db: Any) -> None:
    api.signup()
    validator = api.agent("validation")
    rate(api, finished_task(api, validator["id"]), 4)
    now = utcnow()
    with db.transaction() as first:
        counted_first = fold_feedback(first, now=now, half_life_days=30)
        with db.transaction() as second:  # the sweep while a learning task holds the row: skipped, not counted
            counted_second = fold_feedback(second, now=now, half_life_days=30)
    assert (counted_first.folded, counted_second.folded) == (1, 0)
    with db.read() as session:
        agent = session.get(Agent, uuid.UUID(validator["id"]))
        assert (agent.quality_alpha, agent.quality_beta) == (1.75, 1.25)
        assert session.scalar(select(TaskFeedback.processed_at)) == now


def test_feedback_rules(api: Api, other_api: Api) -> None:
    api.signup()
    validator = api.agent("validation")
    task_id = finished_task(api, validator["id"])
    pending = create_task(api, validator["id"]).json_body
    error = assert_envelope(rate(api, pending["id"], 4), 409, "CONFLICT")
    assert error["details"]["status"] == "queued"
    assert rate(api, task_id, 3).status_code == 201
    assert assert_envelope(rate(api, task_id, 5), 409, "CONFLICT")["message"] == "you already rated this task"
    for bad in ({"rating": 6}, {"rating": 0}, {"rating": "5"}, {"rating": True}, {"rating": 4, "stars": 4}, {}):
        assert_envelope(api.call("POST", f"/tasks/{task_id}/feedback", bad), 422, "VALIDATION_ERROR")
    assert_envelope(api.call("POST", f"/tasks/{task_id}/feedback", raw="{"), 400, "BAD_REQUEST")
    # Another user cannot rate (or see) my task: 404, as if it did not exist.
    other_api.signup()
    assert_envelope(rate(other_api, task_id, 1), 404, "NOT_FOUND")
    assert_envelope(other_api.call("GET", f"/tasks/{task_id}/feedback"), 404, "NOT_FOUND")
    assert_envelope(api.call("GET", f"/tasks/{pending['id']}/feedback"), 404, "NOT_FOUND")
    assert_envelope(rate(api, "not-a-uuid", 3), 404, "NOT_FOUND")


def test_learning_input_and_failure(api: Api) -> None:
    api.signup()
    learner = api.agent("learning")
    r = api.call("POST", "/tasks", {"agent_id": learner["id"], "title": "x", "input_data": {"feedback_ids": [1]}})
    assert assert_envelope(r, 422, "VALIDATION_ERROR")["details"]["errors"][0]["loc"][:2] == [
        "input_data", "feedback_ids"]
    # A rating that is not mine (or does not exist) fails the task, naming it.
    ghost = str(uuid.uuid4())
    task = api.call("POST", "/tasks", {"agent_id": learner["id"], "title": "x",
                                       "input_data": {"feedback_ids": [ghost]}}).json_body
    assert run_learning(task["id"]) == {"batchItemFailures": []}
    failed = api.call("GET", f"/tasks/{task['id']}").json_body
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "FEEDBACK_NOT_FOUND" and failed["error"]["details"]["feedback_ids"] == [ghost]
