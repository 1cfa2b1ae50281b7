"""The `enhancement` agent: deterministic suggestions first, the model's merged in, all ranked and located."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.agents.enhancement import EnhancementAgent, EnhancementInput
from chalicelib.agents.registry import validate_input
from chalicelib.errors import AgentError, ValidationError
from chalicelib.providers.registry import Providers
from tests.llm_server import FakeClock, LLMServer, agent_context, completion, error, llm_settings, openai_config

# Line numbers matter below.
CODE = "import os\nimport json\n\n\ndef route(event):\n" + "".join(
    f"    {'if' if i == 0 else 'elif'} event[{i}]:\n        return {i}\n" for i in range(10)) + (
    "    return missing\n\n\ndef _private():\n    return json.dumps({})\n\n\nclass Handler:\n"
    '    """Handles."""\n\n    def handle(self):\n        return 1\n')
YAML = ("database:\n  host: db.internal\n  password: hunter2\n  host: db2.internal\nlog_level: info\n"
        "users:\n  - name: a\n    token: abc\n  - name: b\nscript: |\n  host: x\n  host: y\n"
        "secret_arn: arn:aws:secretsmanager:us-east-1:1:secret:x\napi_key: ${API_KEY}\nlog_level: debug\n"
        "[prod]\nlog_level: warn\n")
JSON_CONFIG = ('{\n  "db": {\n    "host": "a",\n    "password": "hunter2",\n    "host": "b"\n  },\n'
               '  "api_key": "${API_KEY}",\n  "aws": {"access": "AKIAIOSFODNN7EXAMPLE"},\n  "token_ttl": "300",\n'
               '  "note": "say \\"x\\": y"\n}\n')
DOCUMENT = ("Our new deployment process is is faster. The deployment was approved by the team, and the deployment "
            "scripts were rewritten so that every engineer on every team can ship a change to production without "
            "waiting for the release manager to be available.\nDeployment matters.")


def enhance(kind: str, content: str, filename: str | None = None, config: dict[str, Any] | None = None,
            providers: Providers | None = None) -> dict[str, Any]:
    ctx = agent_context(providers or Providers(llm_settings(), environ={}), "enhancement")
    data = EnhancementInput(kind=kind, content=content, filename=filename)  # type: ignore[arg-type]
    result = EnhancementAgent().run(data, config or {}, ctx)
    return {**result.output, "_metrics": result.metrics}


def table(out: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(s["rank"], s["severity"], s["rule"], s["location"]["line"]) for s in out["suggestions"]]


def test_code_reuses_the_examination_analysis_and_adds_docstrings() -> None:
    out = enhance("code", CODE, "router.py")
    assert out["provider"] is None and out["checks"][:2] == ["python-syntax", "cyclomatic-complexity"]
    assert table(out) == [
        (1, "high", "lint:UndefinedName", 26),
        (2, "medium", "complexity", 5),
        (3, "low", "missing-docstring", 1),
        (4, "low", "lint:UnusedImport", 1),
        (5, "low", "missing-docstring", 5),
        (6, "low", "missing-docstring", 36),
    ]
    assert out["suggestions"][1]["message"] == "split function route: cyclomatic complexity 11 (rank C) is above 10"
    assert out["suggestions"][1]["location"] == {"line": 5, "end_line": 26}
    assert out["counts"] == {"critical": 0, "high": 1, "medium": 1, "low": 4}
    assert out["_metrics"]["suggestions"] == 6


def test_code_with_a_syntax_error_is_a_critical_suggestion() -> None:
    out = enhance("code", "def f(:\n    pass\n")
    assert table(out) == [(1, "critical", "syntax-error", 1)]


def test_non_python_code_gets_no_deterministic_checks() -> None:
    out = enhance("code", "function f() { return 1 }", "f.js")
    assert out["checks"] == [] and out["suggestions"] == [] and out["provider"] is None


def test_json_config_duplicate_keys_and_secrets_with_lines_and_paths() -> None:
    out = enhance("config", JSON_CONFIG, "app.json")
    assert out["checks"][0] == "json-parse"
    assert [(s["rule"], s["location"]["line"], s["location"]["path"]) for s in out["suggestions"]] == [
        ("plaintext-secret", 4, "/db/password"),
        ("duplicate-key", 5, "/db/host"),
        ("plaintext-secret", 8, "/aws/access"),
    ]
    assert "first on line 3" in out["suggestions"][1]["message"]


def test_invalid_json_is_located() -> None:
    out = enhance("config", '{\n  "a": 1,\n  "b": \n}\n')
    assert table(out) == [(1, "critical", "invalid-json", 4)]
    assert out["suggestions"][0]["location"]["column"] == 1


def test_yaml_like_config_scopes_keys_by_indentation_sections_and_list_items() -> None:
    out = enhance("config", YAML, "service.yaml")
    assert out["checks"][0] == "key-value-parse"
    assert [(s["rule"], s["location"]["line"], s["location"]["path"]) for s in out["suggestions"]] == [
        ("plaintext-secret", 3, "database/password"),
        ("duplicate-key", 4, "database/host"),
        ("plaintext-secret", 8, "users/[0]/token"),
        ("duplicate-key", 15, "log_level"),
    ]  # not: the two list items' `name`, the block scalar's lines, the ARN, ${API_KEY}, [prod]'s log_level


def test_documents_get_the_editing_diagnostics() -> None:
    out = enhance("document", DOCUMENT)
    assert [(s["severity"], s["rule"], s["location"]["line"]) for s in out["suggestions"]] == [
        ("medium", "repeated-word", 1), ("medium", "long-sentence", 1), ("medium", "readability", None),
        ("low", "passive-voice", 1), ("low", "passive-voice", 1), ("low", "overused-word", None)]
    assert out["suggestions"][2]["message"].startswith("make it easier to read: Flesch reading ease 49.67")


# --- with a provider ---------------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[LLMServer]:
    with LLMServer() as s:
        yield s


def with_server(server: LLMServer, clock: FakeClock | None = None, **settings: Any) -> Providers:
    clock = clock or FakeClock()
    return Providers(llm_settings(**settings), environ={"YMERA_LLM_KEY_TEST": "k"}, clock=clock, sleep=clock.sleep)


def test_model_suggestions_are_merged_deduplicated_and_ranked(server: LLMServer) -> None:
    answer = json.dumps([
        {"line": 1, "severity": "low", "message": "'os' imported but unused"},  # already found
        {"line": 26, "severity": "critical", "message": "route returns an undefined name for unknown events"},
        {"line": 5, "severity": "medium", "message": "Use a dict lookup instead of the elif chain"},
        {"line": 999, "severity": "info", "message": "Consider type hints"},  # no such line: document-wide
        {"severity": "high"},  # no message: dropped
    ])
    server.script(completion("Here you go:\n```json\n" + answer + "\n```"))
    out = enhance("code", CODE, "router.py", openai_config(server), with_server(server))
    assert out["provider"]["name"] == "openai" and out["provider"]["suggestions"] == 3
    assert out["provider"]["usage"]["total_tokens"] == 60
    assert [(s["rank"], s["severity"], s["source"], s["location"]["line"]) for s in out["suggestions"]][:3] == [
        (1, "critical", "provider", 26), (2, "high", "deterministic", 26), (3, "medium", "deterministic", 5)]
    assert ("low", "provider", None) in [(s["severity"], s["source"], s["location"]["line"])
                                        for s in out["suggestions"]]
    assert out["total"] == 9 and out["_metrics"]["provider_calls"] == 1
    prompt = server.requests[0]["body"]["messages"][1]["content"]
    assert "    5 | def route(event):" in prompt and "- line 1: 'os' imported but unused" in prompt


def test_a_provider_outage_still_returns_the_deterministic_suggestions(server: LLMServer) -> None:
    server.script(error(503), error(503), error(503))
    out = enhance("document", DOCUMENT, config=openai_config(server), providers=with_server(server))
    assert out["provider"]["error"]["code"] == "PROVIDER_UNAVAILABLE" and out["provider"]["suggestions"] == 0
    assert len(out["suggestions"]) == 6 and server.calls == 3


def test_an_unreadable_model_answer_is_reported_not_invented(server: LLMServer) -> None:
    server.script(completion("Looks good to me!"))
    out = enhance("document", DOCUMENT, config=openai_config(server), providers=with_server(server))
    assert out["provider"]["error"]["code"] == "PROVIDER_BAD_RESPONSE"
    assert {s["source"] for s in out["suggestions"]} == {"deterministic"}


def test_a_misconfigured_provider_fails_the_task(server: LLMServer) -> None:
    config = {**openai_config(server), "key": "never-stored"}
    with pytest.raises(AgentError) as caught:
        enhance("document", DOCUMENT, config=config, providers=with_server(server))
    assert caught.value.code == "PROVIDER_NOT_CONFIGURED" and "not available" in caught.value.message
    assert server.calls == 0


def test_max_suggestions_truncates_after_ranking() -> None:
    out = enhance("code", CODE, "router.py", {"max_suggestions": 2})
    assert [s["rank"] for s in out["suggestions"]] == [1, 2] and out["total"] == 6 and out["truncated"] is True


@pytest.mark.parametrize("bad", [{"kind": "poem", "content": "x"}, {"kind": "code"}, {"kind": "code", "content": ""},
                                 {"kind": "code", "content": "x", "extra": 1}])
def test_invalid_input_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        validate_input("enhancement", bad)
