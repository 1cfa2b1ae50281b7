"""The `editing` agent and the deterministic writing diagnostics it measures before and after."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.agents import textstats
from chalicelib.agents.editing import EditingAgent, EditingInput, unified_diff
from chalicelib.agents.registry import validate_input
from chalicelib.errors import AgentError, ValidationError
from chalicelib.providers.registry import Providers
from tests.llm_server import LLMServer, agent_context, completion, llm_settings, openai_config

BEFORE = ("Our new deployment process is is faster. The deployment was approved by the team, and the deployment "
          "scripts were rewritten so that every engineer on every team can ship a change to production without "
          "waiting for the release manager to be available.\nDeployment matters.")
AFTER = ("Our new deployment process is faster. The team approved it.\n"
         "We rewrote the scripts: any engineer can now ship to production without the release manager.\n"
         "Deployment matters.")


# --- diagnostics, with values worked out by hand ----------------------------------------------------


@pytest.mark.parametrize(("word", "count"), [("the", 1), ("cat", 1), ("table", 2), ("make", 1), ("makes", 1),
                                             ("jumped", 1), ("wanted", 2), ("places", 2), ("boxes", 2),
                                             ("readability", 5), ("beautiful", 3), ("deployment", 3),
                                             ("carefully", 4), ("yellow", 2), ("", 0)])
def test_syllable_heuristic(word: str, count: int) -> None:
    assert textstats.syllables(word) == count


def test_flesch_reading_ease_by_hand() -> None:
    # 6 words, 1 sentence, 6 syllables: 206.835 - 1.015 * 6 - 84.6 * 1
    assert textstats.flesch_reading_ease("The cat sat on a mat.") == 116.15
    # 11 words, 2 sentences, 17 syllables (carefully counts 4): 206.835 - 1.015 * 5.5 - 84.6 * 17 / 11 = 70.507
    assert textstats.flesch_reading_ease("The report was written by the team. It was reviewed carefully.") == 70.51
    assert textstats.flesch_reading_ease("   ") is None


def test_sentences_do_not_end_at_abbreviations_and_do_end_at_blank_lines() -> None:
    found = textstats.sentences("Dr. Smith met Mr. Jones, e.g. at noon. Then left!\n\nHeading without stop\nMore")
    assert [(s.index, s.words) for s in found] == [(1, 9), (2, 2), (3, 4)]


def test_passive_voice_heuristic() -> None:
    text = ("The report was written by Ann.\nThe scripts were quickly rewritten. It is red. "
            "She was indeed right. Bugs are not fixed. We fixed them.")
    assert [(p["line"], p["text"]) for p in textstats.passive_voice(text)] == [
        (1, "was written"), (2, "were quickly rewritten"), (2, "are not fixed")]


def test_repeated_and_overused_words() -> None:
    text = "The the cache is fast.\nIt is is fast. Cache hits, cache misses, cache keys."
    assert [(r["word"], r["line"], r["text"]) for r in textstats.repeated_words(text)] == [
        ("the", 1, "The the"), ("is", 2, "is is")]
    assert textstats.overused_words(text, threshold=3) == [{"word": "cache", "count": 4}]
    assert textstats.overused_words(text, threshold=5) == []


def test_diagnose_the_whole_report() -> None:
    d = textstats.diagnose(BEFORE, long_sentence_words=25, overuse_threshold=3)
    assert (d["words"], d["sentences"], d["syllables"], d["avg_words_per_sentence"]) == (44, 3, 74, 14.67)
    # 206.835 - 1.015 * 44 / 3 - 84.6 * 74 / 44 = 49.6665
    assert (d["flesch_reading_ease"], d["readability"]) == (49.67, "difficult")
    assert [(s["sentence"], s["line"], s["words"]) for s in d["long_sentences"]] == [(2, 1, 35)]
    assert [p["text"] for p in d["passive_voice"]] == ["was approved", "were rewritten"]
    assert [r["text"] for r in d["repeated_words"]] == ["is is"]
    assert d["overused_words"] == [{"word": "deployment", "count": 4}]


# --- the agent ------------------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[LLMServer]:
    with LLMServer() as s:
        yield s


def edit(server: LLMServer, answer: str, finish_reason: str = "stop", **input_data: Any) -> dict[str, Any]:
    server.script(completion(answer, finish_reason=finish_reason))
    providers = Providers(llm_settings(), environ={"YMERA_LLM_KEY_TEST": "k"})
    data = EditingInput.model_validate({"text": BEFORE, **input_data})
    result = EditingAgent().run(data, openai_config(server), agent_context(providers, "editing"))
    return {**result.output, "_metrics": result.metrics}


def test_edit_with_diagnostics_before_and_after_and_a_diff(server: LLMServer) -> None:
    out = edit(server, AFTER, instructions="Use the active voice.")
    assert out["edited_text"] == AFTER and out["changed"] is True
    before, after, change = (out["diagnostics"][k] for k in ("before", "after", "change"))
    assert before["flesch_reading_ease"] == 49.67 and len(before["passive_voice"]) == 2
    assert after["passive_voice"] == [] and after["repeated_words"] == [] and after["long_sentences"] == []
    assert change["passive_voice"] == -2 and change["long_sentences"] == -1 and change["repeated_words"] == -1
    assert change["flesch_reading_ease"] == round(after["flesch_reading_ease"] - 49.67, 2)
    assert change["flesch_reading_ease"] > 0
    assert out["diff"].splitlines()[:3] == ["--- original", "+++ edited", "@@ -1,2 +1,3 @@"]
    assert "+The team approved it." not in out["diff"]  # a line diff: whole lines change
    assert "+Our new deployment process is faster. The team approved it." in out["diff"]
    assert " Deployment matters." in out["diff"]
    assert out["_metrics"]["words_before"] == 44 and out["_metrics"]["total_tokens"] == 60
    prompt = server.requests[0]["body"]["messages"][1]["content"]
    assert prompt.startswith("Instructions: Use the active voice.\n\nText:\n" + BEFORE[:20])


def test_a_fenced_answer_is_unwrapped(server: LLMServer) -> None:
    assert edit(server, f"```text\n{AFTER}\n```")["edited_text"] == AFTER


def test_a_cut_off_or_empty_edit_fails_the_task(server: LLMServer) -> None:
    with pytest.raises(AgentError) as caught:
        edit(server, AFTER[:30], finish_reason="length")
    assert caught.value.code == "PROVIDER_BAD_RESPONSE" and "max_tokens" in caught.value.message
    with pytest.raises(AgentError) as caught:
        edit(server, "\n\n")
    assert caught.value.code == "PROVIDER_BAD_RESPONSE"


def test_unchanged_text_has_an_empty_diff() -> None:
    assert unified_diff("same\ntext", "same\ntext") == ""


@pytest.mark.parametrize("bad", [{"text": ""}, {}, {"text": "x", "instructions": "y" * 5001}, {"text": "x", "n": 1}])
def test_invalid_input_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        validate_input("editing", bad)
