"""The validation agent's data-quality mode and the examination agent's grade, through the API and the consumer."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import Api
from tests.integration.test_api_auth import assert_envelope
from tests.integration.test_api_tasks import create_task
from tests.integration.test_consumer import message, run
from tests.unit.test_agent_examination_grade import SMALL_HELPERS, router
from tests.unit.test_agent_validation_quality import CUSTOMERS


def run_task(api: Api, agent_type: str, input_data: dict[str, Any]) -> dict[str, Any]:
    agent = api.agent(agent_type)
    created = create_task(api, agent["id"], input_data=input_data)
    assert created.status_code == 202, created.json_body
    task_id = created.json_body["id"]
    assert run([(f"m-{task_id}", message(task_id, agent_type))], agent_type) == {"batchItemFailures": []}
    return dict(api.call("GET", f"/tasks/{task_id}").json_body)


def test_data_quality_task_reports_per_rule_counts(api: Api) -> None:
    api.signup()

    task = run_task(api, "validation", {"records": CUSTOMERS, "rules": {
        "required": ["email"], "unique": ["id"], "max_null_ratio": {"age": 0.2}}})

    assert task["status"] == "completed"
    output = task["result"]["output_data"]
    assert [(r["rule"], r["field"], r["passed"], r["violations"], r["examples"]) for r in output["rules"]] == [
        ("required", "email", False, 2, [1, 4]),
        ("unique", "id", False, 1, [3]),
        ("max_null_ratio", "age", True, 1, [3]),
    ]
    # (0.6667 + 0.8333 + 1) / 3
    assert output["score"] == 83.3 and output["valid"] is False
    assert task["result"]["metrics"]["violations"] == 4


def test_json_schema_tasks_are_unchanged(api: Api) -> None:
    api.signup()

    task = run_task(api, "validation", {"schema": {"type": "array", "items": {"type": "integer"}},
                                        "payload": [1, "two"]})

    assert task["result"]["output_data"]["errors"][0]["path"] == "/1"


@pytest.mark.parametrize(
    ("input_data", "loc"),
    [
        ({"records": [], "rules": {"required": ["id"]}}, ["input_data", "records"]),
        ({"records": [{"id": 1}], "rules": {}}, ["input_data", "rules"]),
        ({"records": [{"id": 1}], "rules": {"required": ["id"]}, "payload": 1}, ["input_data", "payload"]),
        ({"records": [{"id": 1}], "rules": {"ranges": {"id": {"min": 9, "max": 1}}}},
         ["input_data", "rules", "ranges", "id"]),
        ({"schema": {}, "payload": 1, "rules": {}}, ["input_data", "rules"]),
    ],
)
def test_post_tasks_refuses_bad_validation_input(api: Api, input_data: dict[str, Any], loc: list[str]) -> None:
    api.signup()
    agent = api.agent("validation")

    error = assert_envelope(create_task(api, agent["id"], input_data=input_data), 422, "VALIDATION_ERROR")

    assert [e["loc"] for e in error["details"]["errors"]] == [loc]


def test_examination_task_carries_grade_rule_and_worst_functions(api: Api) -> None:
    api.signup()

    task = run_task(api, "examination", {"source": router(11) + SMALL_HELPERS, "filename": "routes.py"})

    output = task["result"]["output_data"]
    assert output["grade"] == "B"
    assert output["grade_rule"] == "B: the worst criterion sets the grade: max complexity 12 (route, line 1) <= 15 → B"
    assert [(f["name"], f["complexity"]) for f in output["worst_functions"]] == [
        ("route", 12), ("one", 1), ("two", 1), ("three", 1)]


def test_examination_of_unanalysable_source_fails_the_task(api: Api) -> None:
    api.signup()

    task = run_task(api, "examination", {"source": "x = (\n" + "+\n".join(["1"] * 30_000) + ")\n"})

    assert task["status"] == "failed" and task["error"]["code"] == "AGENT_INPUT_INVALID"


@pytest.mark.parametrize("input_data", [{"source": ""}, {"source": "x = 1", "language": "python"}, {}])
def test_post_tasks_refuses_bad_examination_input(api: Api, input_data: dict[str, Any]) -> None:
    api.signup()
    agent = api.agent("examination")

    assert_envelope(create_task(api, agent["id"], input_data=input_data), 422, "VALIDATION_ERROR")
