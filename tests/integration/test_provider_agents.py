"""Provider-backed agent types end to end: API -> queue message -> consumer -> model server -> task result.

The model is a real HTTP server in this process speaking the OpenAI protocol
(tests/llm_server.py); each agent is configured to use it the way a user
would: as their own (keyless, loopback: development) endpoint, or one with a stored key.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.container import Container, get_container, set_container
from tests.integration.conftest import Api
from tests.integration.test_api_auth import assert_envelope
from tests.integration.test_api_tasks import create_task
from tests.integration.test_consumer import message, run
from tests.llm_server import LLMServer, completion, error, openai_config

PROVIDER_TYPES = ("llm", "drafting", "editing", "enhancement")
OUTLINE = ["Context", "What we changed", "What it costs"]


@pytest.fixture(autouse=True)
def _provider_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Autouse fixtures run first, so the `settings` fixture reads these too.
    monkeypatch.setenv("YMERA_LLM_KEY_TEST", "sk-integration")
    monkeypatch.setenv("YMERA_LLM_RETRY_BASE_SECONDS", "0.01")
    monkeypatch.setenv("YMERA_LLM_BREAKER_FAILURE_THRESHOLD", "3")
    for name in ("YMERA_LLM_PROVIDER", "YMERA_LLM_MODEL", "YMERA_LLM_BASE_URL", "YMERA_LLM_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[LLMServer]:
    with LLMServer() as s:
        yield s


def agent(api: Api, agent_type: str, config: dict[str, Any]) -> dict[str, Any]:
    r = api.call("POST", "/agents", {"name": f"{agent_type} agent", "type": agent_type, "config": config})
    assert r.status_code == 201, r.json_body
    return dict(r.json_body)


def process(api: Api, agent_type: str, config: dict[str, Any], input_data: dict[str, Any], *,
            signup: bool = True) -> dict[str, Any]:
    """Create an agent and a task, run the consumer once, and return the task as the API shows it."""
    if signup:
        api.signup()
    created = create_task(api, agent(api, agent_type, config)["id"], input_data=input_data)
    assert created.status_code == 202, created.json_body
    task_id = created.json_body["id"]
    assert run([("m1", message(task_id, agent_type))], agent_type) == {"batchItemFailures": []}
    return dict(api.call("GET", f"/tasks/{task_id}").json_body)


# --- each type: a realistic task and its checked result ---------------------------------------------


def test_llm_task_completes_with_text_usage_and_latency_recorded(api: Api, server: LLMServer) -> None:
    server.script(completion("After maxReceiveCount receives: 5 here.", prompt_tokens=52, completion_tokens=11))
    api.signup()
    assert api.call("PUT", "/provider-keys/test", {"api_key": "sk-integration"}).status_code == 201
    task = process(api, "llm", openai_config(server, system_prompt="Answer briefly.", key="test"),
                   {"prompt": "When does SQS move a message to the DLQ?"}, signup=False)
    assert task["status"] == "completed", task["error"]
    output, metrics = task["result"]["output_data"], task["result"]["metrics"]
    assert output["text"] == "After maxReceiveCount receives: 5 here." and output["model"] == "test-model"
    assert output["usage"] == {"input_tokens": 52, "output_tokens": 11, "total_tokens": 63}
    assert metrics["provider"] == "openai" and metrics["total_tokens"] == 63 and metrics["provider_calls"] == 1
    assert metrics["provider_latency_ms"] > 0 and metrics["duration_ms"] >= metrics["provider_latency_ms"]
    sent = server.requests[0]
    assert sent["headers"]["Authorization"] == "Bearer sk-integration"
    assert sent["body"]["messages"][0] == {"role": "system", "content": "Answer briefly."}


def test_drafting_task_returns_sections_and_the_deviations_from_the_brief(api: Api, server: LLMServer) -> None:
    sections = [{"heading": "Context", "body": "Tasks used to run in one process. " * 5},
                {"heading": "What it costs", "body": "We pay per request and per message. " * 5}]
    server.script(completion(json.dumps({"title": "Moving to SQS", "sections": sections})))
    task = process(api, "drafting", openai_config(server, length_tolerance=0.25),
                   {"topic": "Moving to SQS", "audience": "new engineers", "tone": "friendly", "outline": OUTLINE,
                    "target_length": 60})
    assert task["status"] == "completed", task["error"]
    output = task["result"]["output_data"]
    assert output["title"] == "Moving to SQS" and [s["words"] for s in output["sections"]] == [35, 35]
    assert output["conforms"] is False
    assert [(d["kind"], d["section"]) for d in output["deviations"]] == [("missing_section", "What we changed")]
    assert output["checks"]["length"]["words"] == 70 and output["checks"]["length"]["within_tolerance"] is True
    assert task["result"]["metrics"]["deviations"] == 1 and task["result"]["metrics"]["total_tokens"] == 60


def test_editing_task_returns_the_edit_diagnostics_and_diff(api: Api, server: LLMServer) -> None:
    text = "The report was written by the the team.\nIt was reviewed by nobody."
    edited = "The team wrote the report.\nNobody reviewed it."
    server.script(completion(edited))
    task = process(api, "editing", openai_config(server), {"text": text, "instructions": "Use the active voice."})
    assert task["status"] == "completed", task["error"]
    output = task["result"]["output_data"]
    assert output["edited_text"] == edited
    assert [p["text"] for p in output["diagnostics"]["before"]["passive_voice"]] == ["was written", "was reviewed"]
    assert output["diagnostics"]["after"]["passive_voice"] == []
    assert output["diagnostics"]["change"]["repeated_words"] == -1
    assert output["diff"] == ("--- original\n+++ edited\n@@ -1,2 +1,2 @@\n-The report was written by the the team.\n"
                              "-It was reviewed by nobody.\n+The team wrote the report.\n+Nobody reviewed it.")


def test_enhancement_task_merges_model_suggestions_into_the_ranked_list(api: Api, server: LLMServer) -> None:
    server.script(completion(json.dumps([{"line": 2, "severity": "medium", "message": "Pin the port in config"}])))
    content = "database:\n  port: 5432\n  password: hunter2\n  port: 5433\n"
    task = process(api, "enhancement", openai_config(server), {"kind": "config", "content": content,
                                                               "filename": "db.yaml"})
    assert task["status"] == "completed", task["error"]
    output = task["result"]["output_data"]
    assert [(s["rank"], s["severity"], s["rule"], s["location"]["line"]) for s in output["suggestions"]] == [
        (1, "high", "plaintext-secret", 3), (2, "high", "duplicate-key", 4), (3, "medium", "model", 2)]
    assert output["provider"]["name"] == "openai" and output["provider"]["suggestions"] == 1


def test_enhancement_without_any_provider_still_answers_with_provider_null(api: Api) -> None:
    task = process(api, "enhancement", {}, {"kind": "code", "content": "import os\n"})
    assert task["status"] == "completed", task["error"]
    output = task["result"]["output_data"]
    assert output["provider"] is None
    assert [(s["rule"], s["location"]["line"]) for s in output["suggestions"]] == [("lint:UnusedImport", 1)]


def test_the_stage_provider_serves_agents_without_provider_config(api: Api, server: LLMServer, db: Any) -> None:
    base = get_container()
    stage = base.settings.model_copy(update={"llm_provider": "openai", "llm_model": "stage-model",
                                             "llm_base_url": server.url, "llm_api_key": "sk-stage"})
    set_container(Container(stage, database=db, publisher=base.publisher))
    task = process(api, "llm", {}, {"prompt": "hi"})
    assert task["status"] == "completed", task["error"]
    assert server.requests[0]["body"]["model"] == "stage-model"
    assert server.requests[0]["headers"]["Authorization"] == "Bearer sk-stage"


# --- failure paths -------------------------------------------------------------------------------


def test_llm_without_a_provider_fails_naming_what_to_configure(api: Api) -> None:
    task = process(api, "llm", {}, {"prompt": "hi"})
    assert task["status"] == "failed" and task["result"]["output_data"] == {}
    assert task["error"]["code"] == "PROVIDER_NOT_CONFIGURED"
    assert "config.endpoint" in task["error"]["message"] and "YMERA_LLM_PROVIDER" in task["error"]["message"]


def test_drafting_fails_on_an_answer_that_is_not_a_draft(api: Api, server: LLMServer) -> None:
    server.script(completion("As an AI, I would rather not."))
    task = process(api, "drafting", openai_config(server), {"topic": "x", "audience": "y", "outline": ["A"],
                                                            "target_length": 100})
    assert task["status"] == "failed" and task["error"]["code"] == "PROVIDER_BAD_RESPONSE"


def test_editing_over_its_token_limit_fails_with_the_usage(api: Api, server: LLMServer) -> None:
    server.script(completion("Edited.", prompt_tokens=300, completion_tokens=200))
    task = process(api, "editing", openai_config(server, max_total_tokens=400), {"text": "Some text to edit."})
    assert task["status"] == "failed" and task["error"]["code"] == "TOKEN_LIMIT_EXCEEDED"
    assert task["error"]["details"]["limit"] == 400 and task["error"]["details"]["usage"]["total_tokens"] == 500


def test_enhancement_with_a_missing_key_fails_instead_of_quietly_skipping_the_model(api: Api,
                                                                                   server: LLMServer) -> None:
    task = process(api, "enhancement", openai_config(server, key="never-stored"),
                   {"kind": "document", "content": "Fine text."})
    assert task["status"] == "failed" and task["error"]["code"] == "PROVIDER_NOT_CONFIGURED"
    assert "not available" in task["error"]["message"] and server.calls == 0


def test_an_outage_opens_the_circuit_and_later_tasks_fail_fast(api: Api, server: LLMServer) -> None:
    api.signup()
    llm = agent(api, "llm", openai_config(server))
    server.script(*(error(503) for _ in range(3)))
    ids = [create_task(api, llm["id"], input_data={"prompt": f"q{i}"}).json_body["id"] for i in range(2)]
    run([(f"m{i}", message(task_id, "llm")) for i, task_id in enumerate(ids)], "llm")
    first, second = (api.call("GET", f"/tasks/{task_id}").json_body for task_id in ids)
    assert first["error"]["code"] == "PROVIDER_UNAVAILABLE" and first["error"]["details"]["attempts"] == 3
    assert second["error"]["code"] == "PROVIDER_UNAVAILABLE" and second["error"]["details"]["circuit"] == "open"
    assert server.calls == 3  # the second task never reached the endpoint


# --- the API side -------------------------------------------------------------------------------


@pytest.mark.parametrize(("agent_type", "bad_input", "loc"), [
    ("llm", {"prompt": ""}, ["input_data", "prompt"]),
    ("drafting", {"topic": "x", "audience": "y", "outline": [], "target_length": 100}, ["input_data", "outline"]),
    ("editing", {"txt": "typo in the key"}, ["input_data", "text"]),
    ("enhancement", {"kind": "spreadsheet", "content": "a,b"}, ["input_data", "kind"]),
])
def test_invalid_input_is_422_with_the_violation(api: Api, agent_type: str, bad_input: dict[str, Any],
                                                 loc: list[str]) -> None:
    api.signup()
    r = create_task(api, agent(api, agent_type, {})["id"], input_data=bad_input)
    error_body = assert_envelope(r, 422, "VALIDATION_ERROR")
    assert loc in [e["loc"] for e in error_body["details"]["errors"]]


def test_an_api_key_in_clear_is_refused_and_only_references_are_stored(api: Api, server: LLMServer) -> None:
    api.signup()
    r = api.call("POST", "/agents", {"name": "x", "type": "llm", "config": {**openai_config(server),
                                                                             "api_key": "sk-live-secret"}})
    assert assert_envelope(r, 422, "VALIDATION_ERROR")["details"]["errors"][0]["loc"] == ["config", "api_key"]
    r = api.call("POST", "/agents", {"name": "x", "type": "llm",
                                     "config": {**openai_config(server), "api_key_env": "YMERA_LLM_KEY_TEST"}})
    error_body = assert_envelope(r, 422, "VALIDATION_ERROR")
    assert "no longer supported" in json.dumps(error_body) and "config.endpoint" in json.dumps(error_body)
    created = agent(api, "llm", openai_config(server, key="mine"))
    shown = api.call("GET", f"/agents/{created['id']}").json_body
    assert shown["config"]["key"] == "mine" and "sk-integration" not in json.dumps(shown)


def test_agent_types_lists_the_provider_backed_types_with_their_config_schema(api: Api) -> None:
    api.signup()
    items = {i["type"]: i for i in api.call("GET", "/agent-types").json_body["items"]}
    for agent_type in PROVIDER_TYPES:
        assert items[agent_type]["provider_backed"] is True
        properties = items[agent_type]["config_schema"]["properties"]
        assert {"endpoint", "provider", "model", "base_url", "key", "max_total_tokens",
                "max_wall_seconds"} <= set(properties)
        assert not {"api_key_env", "api_key_secret_arn"} & set(properties)
        assert items[agent_type]["default_config"]["max_wall_seconds"] == 50.0
