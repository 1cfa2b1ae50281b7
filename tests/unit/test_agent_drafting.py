"""The `drafting` agent: the draft the model writes, read leniently and checked strictly against the brief."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.agents.drafting import DraftingAgent, DraftingInput, parse_draft
from chalicelib.agents.drafting_checks import check_length, check_outline, normalize
from chalicelib.agents.registry import validate_input
from chalicelib.errors import AgentError, ValidationError
from chalicelib.providers.registry import Providers
from tests.llm_server import LLMServer, agent_context, completion, llm_settings, openai_config

BRIEF = {"topic": "Moving task processing to SQS", "audience": "new engineers", "tone": "friendly",
         "outline": ["Context", "What we changed", "What it costs"], "target_length": 60}


def body(n: int, word: str = "word") -> str:
    return " ".join([word] * n) + "."


@pytest.fixture
def server() -> Iterator[LLMServer]:
    with LLMServer() as s:
        yield s


def draft(server: LLMServer, answer: str, finish_reason: str = "stop", **config: Any) -> dict[str, Any]:
    server.script(completion(answer, finish_reason=finish_reason))
    providers = Providers(llm_settings(), environ={"YMERA_LLM_KEY_TEST": "k"})
    result = DraftingAgent().run(DraftingInput.model_validate(BRIEF), openai_config(server, **config),
                                 agent_context(providers, "drafting"))
    return {**result.output, "_metrics": result.metrics}


def test_a_conforming_json_draft(server: LLMServer) -> None:
    answer = json.dumps({"title": "Why SQS", "sections": [{"heading": "Context", "body": body(20)},
                                                          {"heading": "What we changed", "body": body(22)},
                                                          {"heading": "What it costs", "body": body(18)}]})
    out = draft(server, answer)
    assert out["title"] == "Why SQS" and out["format"] == "json" and out["conforms"] is True
    assert [(s["heading"], s["words"]) for s in out["sections"]] == [
        ("Context", 20), ("What we changed", 22), ("What it costs", 18)]
    assert out["checks"]["length"] == {"words": 60, "target": 60, "tolerance": 0.2, "min_words": 48, "max_words": 72,
                                       "within_tolerance": True, "deviation_pct": 0.0}
    assert out["deviations"] == [] and out["usage"]["total_tokens"] == 60
    assert out["_metrics"]["sections"] == 3 and out["_metrics"]["provider_calls"] == 1
    prompt = server.requests[0]["body"]["messages"][1]["content"]
    assert "1. Context\n2. What we changed\n3. What it costs" in prompt and "about 60 words" in prompt


def test_deviations_missing_extra_out_of_order_empty_and_length(server: LLMServer) -> None:
    answer = "Sure! Here it is:\n```json\n" + json.dumps({"title": "T", "sections": [
        {"heading": "2. What it costs", "body": body(5)},
        {"heading": "Context", "body": body(5)},
        {"heading": "Bonus thoughts", "body": ""}]}) + "\n```"
    out = draft(server, answer)
    assert out["format"] == "json" and out["conforms"] is False
    assert [(d["kind"], d["section"]) for d in out["deviations"]] == [
        ("missing_section", "What we changed"), ("extra_section", "Bonus thoughts"),
        ("out_of_order", "2. What it costs"), ("empty_section", "Bonus thoughts"), ("too_short", None)]
    assert out["deviations"][-1]["message"] == "10 words against a target of 60 (accepted 48-72)"


def test_a_markdown_answer_is_read_by_its_headings(server: LLMServer) -> None:
    answer = (f"# Why SQS\n\n## Context\n{body(25)}\n\n## What we changed\n{body(25)}\n\n"
              f"## What it costs\n{body(25)}\n")
    out = draft(server, answer)
    assert out["format"] == "markdown" and out["title"] == "Why SQS"
    assert [s["heading"] for s in out["sections"]] == BRIEF["outline"]
    assert [d["kind"] for d in out["deviations"]] == ["too_long"]  # 75 > 72


def test_an_unstructured_answer_fails_with_bad_response(server: LLMServer) -> None:
    with pytest.raises(AgentError) as caught:
        draft(server, "I'm sorry, I can't help with that.")
    assert caught.value.code == "PROVIDER_BAD_RESPONSE"
    with pytest.raises(AgentError) as caught:
        draft(server, '{"title": "T", "sections": [{"heading": "Con', finish_reason="length")
    assert "raise config.max_tokens" in caught.value.message


def test_outline_matching_is_tolerant_of_numbering_case_and_punctuation() -> None:
    assert normalize("  2) What We Changed!") == "what we changed"
    assert normalize("Section 3: Costs") == "costs"
    result = check_outline(["A", "B", "C", "D"], ["D", "A", "B", "C"])
    # Moving D is the one fix; A, B, C are in order.
    assert result["out_of_order"] == [{"heading": "D", "position": 1, "expected_position": 4}]
    assert check_outline(["What we changed"], ["What We Have Changed"])["matched"] == 1


def test_length_bounds_are_exact() -> None:
    assert check_length([body(319)], 400, 0.2)["within_tolerance"] is False
    assert check_length([body(320)], 400, 0.2)["within_tolerance"] is True
    assert check_length([body(480)], 400, 0.2)["within_tolerance"] is True
    assert check_length([body(481)], 400, 0.2) == {"words": 481, "target": 400, "tolerance": 0.2,
                                                  "min_words": 320, "max_words": 480, "within_tolerance": False,
                                                  "deviation_pct": 20.2}


def test_parse_prefers_json_anywhere_in_the_answer() -> None:
    title, sections, fmt = parse_draft('Here:\n{"title": "X", "sections": [{"title": "A", "content": "a b"}]} bye')
    assert (title, sections, fmt) == ("X", [{"heading": "A", "body": "a b"}], "json")


@pytest.mark.parametrize("change", [{"outline": []}, {"target_length": 5}, {"outline": ["a"] * 31},
                                    {"topic": ""}, {"sections": 3}])
def test_invalid_briefs_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        validate_input("drafting", {**BRIEF, **change})
