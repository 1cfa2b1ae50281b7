"""The `editing` agent: text in, the model's edit out, with local diagnostics on both.

The diagnostics (chalicelib.agents.textstats: Flesch reading ease, long
sentences, passive voice, repeated and overused words) are computed here on
the text before and after, so whether the edit helped is measured, not
claimed by the model. The diff is a line-based unified diff (difflib).
An edit cut off by the token limit (finish_reason "length") fails the task
with PROVIDER_BAD_RESPONSE rather than passing half a text off as the edit.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.agents.base import Agent, AgentContext, AgentOutput
from chalicelib.agents.input_limits import MAX_LINE_CHARS, line_schema, lines_within
from chalicelib.agents.provider_support import FENCE, load_config, open_session
from chalicelib.agents.textstats import diagnose
from chalicelib.providers.config import ProviderConfig
from chalicelib.providers.errors import ProviderBadResponseError

DEFAULT_INSTRUCTIONS = "Improve clarity and concision and fix grammar; keep the meaning, facts and tone."
SYSTEM = (
    "You are a meticulous editor. Edit the text you are given according to the instructions. Reply with the "
    "edited text only: no preface, no explanation, no code fences, no delimiters. Keep the language and the "
    "formatting (paragraphs, lists, markdown)."
)
COMPARED = ("words", "sentences", "flesch_reading_ease", "avg_words_per_sentence")
COUNTED = ("long_sentences", "passive_voice", "repeated_words", "overused_words")


class EditingInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, lines_within()] = Field(
        min_length=1, max_length=100_000, json_schema_extra=line_schema(),
        description=f"The text to edit: up to 100,000 characters, lines up to {MAX_LINE_CHARS}.")
    instructions: str | None = Field(default=None, max_length=5000,
                                     description=f"How to edit it; default: {DEFAULT_INSTRUCTIONS!r}")


class EditingConfig(ProviderConfig):
    max_tokens: int = Field(default=4096, ge=1, le=200_000, description="Output tokens per model call")
    long_sentence_words: int = Field(default=25, ge=5, le=200, description="Sentences longer than this are long.")
    overuse_threshold: int = Field(default=3, ge=2, le=1000,
                                   description="A non-stopword used this many times or more is overused.")


class EditingAgent(Agent):
    type = "editing"
    Input = EditingInput
    Config = EditingConfig
    provider_backed = True
    description = ("Edits text through the language model and measures the result locally: readability "
                   "(Flesch), long sentences, passive voice, repeated words, before and after, plus a diff.")
    capabilities = ("copy-editing", "flesch-reading-ease", "long-sentences", "passive-voice", "repeated-words",
                    "unified-diff")
    example_input = {
        "text": "The report was written by the the team in a hurry. It was reviewed by nobody, and the numbers "
                "in the report, which were collected over several months from many different sources that did "
                "not always agree with each other, were never checked.",
        "instructions": "Use the active voice and split long sentences.",
    }

    def run(self, data: BaseModel, config: Mapping[str, Any], ctx: AgentContext | None = None) -> AgentOutput:
        assert isinstance(data, EditingInput)
        cfg = load_config(EditingConfig, config)
        session = open_session(cfg, ctx)
        instructions = data.instructions or DEFAULT_INSTRUCTIONS
        completion = session.complete(f"Instructions: {instructions}\n\nText:\n{data.text}", system=SYSTEM)
        if completion.finish_reason == "length":
            raise ProviderBadResponseError("the edited text was cut off by the token limit: raise config.max_tokens",
                                           {"finish_reason": "length", "max_tokens": cfg.max_tokens})
        edited = clean_answer(completion.text)
        if not edited.strip():
            raise ProviderBadResponseError("the model returned an empty edit", {"finish_reason":
                                                                                completion.finish_reason})
        before = diagnose(data.text, cfg.long_sentence_words, cfg.overuse_threshold)
        after = diagnose(edited, cfg.long_sentence_words, cfg.overuse_threshold)
        diff = unified_diff(data.text, edited)
        return AgentOutput(
            output={"edited_text": edited, "changed": edited != data.text, "diff": diff,
                    "diagnostics": {"before": before, "after": after, "change": compare(before, after)},
                    "provider": completion.provider, "model": completion.model,
                    "finish_reason": completion.finish_reason, "usage": session.usage.as_dict()},
            metrics={**session.metrics(), "words_before": before["words"], "words_after": after["words"],
                     "diff_lines": diff.count("\n") + 1 if diff else 0},
        )


def clean_answer(text: str) -> str:
    """The edit without a code fence the model may have wrapped it in."""
    fenced = FENCE.match(text)
    return (fenced.group(1) if fenced else text).strip("\n")


def unified_diff(before: str, after: str) -> str:
    lines = difflib.unified_diff(before.splitlines(), after.splitlines(), fromfile="original", tofile="edited",
                                 lineterm="")
    return "\n".join(lines)


def compare(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """after - before, per measure (a negative `long_sentences` is fewer long sentences)."""
    change: dict[str, Any] = {}
    for key in COMPARED:
        a, b = before[key], after[key]
        change[key] = None if a is None or b is None else round(b - a, 2)
    for key in COUNTED:
        change[key] = len(after[key]) - len(before[key])
    return change
