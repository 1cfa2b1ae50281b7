"""The `drafting` agent: a brief in, a structured draft out, checked against the brief.

The model is asked for JSON ({"title", "sections": [{"heading", "body"}]}).
Models do not always comply, so the answer is read leniently: JSON anywhere
in the text (fenced or not) first, then a markdown document, whose `#` heading
is the title and whose lower headings are the sections. An answer that is
neither fails the task with PROVIDER_BAD_RESPONSE — an unstructured draft
cannot be checked, and pretending to would be a lie.

The checks are local and deterministic: sections missing from the outline,
sections the outline did not ask for, sections out of order (the fewest that
would have to move: those outside a longest in-order run), empty sections,
and the word count against target_length ± length_tolerance.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.agents.base import Agent, AgentContext, AgentOutput
from chalicelib.agents.drafting_checks import check_length, check_outline
from chalicelib.agents.provider_support import extract_json, load_config, open_session
from chalicelib.agents.textstats import words
from chalicelib.providers.config import ProviderConfig
from chalicelib.providers.errors import ProviderBadResponseError

SYSTEM = (
    "You are a careful writer. Reply with one JSON object and nothing else (no prose, no code fences): "
    '{"title": string, "sections": [{"heading": string, "body": string}]}. '
    "Use exactly the section headings you are given, in the given order, one section each. "
    "Bodies are plain prose paragraphs without headings."
)
#: `# Heading #`: the hashes, then the text. The closing hashes and spaces are stripped in `heading` rather than
#: by a lazy `(.+?)\s*#*\s*$`, which backtracked cubically: one 5,000-space line of a model's draft took 580 s.
HEADING = re.compile(r"^(#{1,6})\s+(.+)$")


class Heading(tuple[str, str]):
    """(hashes, text) of a markdown heading line; `group(1)` / `group(2)` read like the regex match it replaces."""

    def group(self, index: int) -> str:
        return self[index - 1]


def heading(line: str) -> Heading | None:
    match = HEADING.match(line)
    if match is None:
        return None
    rest = match.group(2)
    # The shortest text (at least one character) that leaves only spaces, hashes, spaces: strip them from the right.
    text = rest.rstrip().rstrip("#").rstrip() or rest[:1]
    return Heading((match.group(1), text))


class DraftingInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topic: str = Field(min_length=1, max_length=1000, description="What the draft is about.")
    audience: str = Field(min_length=1, max_length=300, description="Who will read it.")
    tone: str = Field(default="neutral", min_length=1, max_length=100, description="e.g. formal, friendly.")
    outline: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        min_length=1, max_length=30, description="Section titles (up to 200 characters each), in order.")
    target_length: int = Field(ge=30, le=20_000, description="Target length of the section bodies, in words.")


class DraftingConfig(ProviderConfig):
    max_tokens: int = Field(default=4096, ge=1, le=200_000, description="Output tokens per model call")
    length_tolerance: float = Field(default=0.2, ge=0, le=1,
                                    description="Accepted deviation from target_length, as a fraction.")


class DraftingAgent(Agent):
    type = "drafting"
    Input = DraftingInput
    Config = DraftingConfig
    provider_backed = True
    description = ("Drafts a document from a brief (topic, audience, tone, outline, target length) through the "
                   "language model and reports where the draft departs from the outline and the length.")
    capabilities = ("structured-draft", "outline-check", "length-check", "json-or-markdown-answers")
    example_input = {
        "topic": "Why our team moved task processing to SQS and Lambda",
        "audience": "engineers joining the team",
        "tone": "friendly",
        "outline": ["Context", "What we changed", "What it costs", "What to watch"],
        "target_length": 400,
    }

    def run(self, data: BaseModel, config: Mapping[str, Any], ctx: AgentContext | None = None) -> AgentOutput:
        assert isinstance(data, DraftingInput)
        cfg = load_config(DraftingConfig, config)
        session = open_session(cfg, ctx)
        completion = session.complete(_prompt(data), system=SYSTEM)
        title, sections, fmt = parse_draft(completion.text, completion.finish_reason)
        outline = check_outline(data.outline, [s["heading"] for s in sections])
        length = check_length([s["body"] for s in sections], data.target_length, cfg.length_tolerance)
        deviations = _deviations(outline, length, sections)
        return AgentOutput(
            output={"title": title or data.topic,
                    "sections": [{**s, "words": len(words(s["body"]))} for s in sections],
                    "format": fmt, "conforms": not deviations, "deviations": deviations,
                    "checks": {"outline": outline, "length": length},
                    "provider": completion.provider, "model": completion.model,
                    "finish_reason": completion.finish_reason, "usage": session.usage.as_dict()},
            metrics={**session.metrics(), "sections": len(sections), "words": length["words"],
                     "deviations": len(deviations)},
        )


def _prompt(data: DraftingInput) -> str:
    outline = "\n".join(f"{i}. {title}" for i, title in enumerate(data.outline, 1))
    return (f"Topic: {data.topic}\nAudience: {data.audience}\nTone: {data.tone}\n"
            f"Length: about {data.target_length} words in total across the section bodies.\n"
            f"Sections, in this order:\n{outline}")


def parse_draft(text: str, finish_reason: str | None = None) -> tuple[str | None, list[dict[str, str]], str]:
    """(title, sections, "json" | "markdown") from a model's answer."""
    try:
        parsed = _from_json(extract_json(text))
    except ValueError:
        parsed = None
    if parsed is not None:
        return parsed[0], parsed[1], "json"
    title, sections = _from_markdown(text)
    if sections:
        return title, sections, "markdown"
    hint = " (the answer was cut off: raise config.max_tokens)" if finish_reason == "length" else ""
    raise ProviderBadResponseError(f"the model's draft is neither the requested JSON nor a markdown document{hint}",
                                   {"finish_reason": finish_reason, "answer_start": text[:200]})


def _from_json(value: Any) -> tuple[str | None, list[dict[str, str]]] | None:
    if not isinstance(value, dict) or not isinstance(value.get("sections"), list):
        return None
    sections = []
    for item in value["sections"]:
        if not isinstance(item, dict):
            return None
        heading = item.get("heading", item.get("title"))
        body = item.get("body", item.get("content", item.get("text", "")))
        if not isinstance(heading, str) or not isinstance(body, str):
            return None
        sections.append({"heading": heading.strip(), "body": body.strip()})
    title = value.get("title")
    return (title.strip() if isinstance(title, str) else None), sections


def _from_markdown(text: str) -> tuple[str | None, list[dict[str, str]]]:
    headings = [(i, m) for i, line in enumerate(text.splitlines()) if (m := heading(line))]
    if not headings:
        return None, []
    lines = text.splitlines()
    top = min(len(m.group(1)) for _, m in headings)
    title = None
    # One top-level heading above lower ones is the title; otherwise every heading is a section.
    if sum(1 for _, m in headings if len(m.group(1)) == top) == 1 and len(headings) > 1:
        title = headings[0][1].group(2) if len(headings[0][1].group(1)) == top else None
    sections = []
    for n, (i, m) in enumerate(headings):
        if title is not None and n == 0:
            continue
        end = headings[n + 1][0] if n + 1 < len(headings) else len(lines)
        sections.append({"heading": m.group(2).strip(), "body": "\n".join(lines[i + 1:end]).strip()})
    return title, sections


def _deviations(outline: dict[str, Any], length: dict[str, Any],
                sections: list[dict[str, str]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for item in outline["missing"]:
        found.append({"kind": "missing_section", "section": item["heading"],
                      "message": f"section {item['position']} of the outline, {item['heading']!r}, is missing"})
    for item in outline["extra"]:
        found.append({"kind": "extra_section", "section": item["heading"],
                      "message": f"section {item['heading']!r} is not in the outline"})
    for item in outline["out_of_order"]:
        found.append({"kind": "out_of_order", "section": item["heading"],
                      "message": f"section {item['heading']!r} is at position {item['position']}, "
                                 f"the outline puts it at {item['expected_position']}"})
    for s in sections:
        if not words(s["body"]):
            found.append({"kind": "empty_section", "section": s["heading"],
                          "message": f"section {s['heading']!r} has no text"})
    if not length["within_tolerance"]:
        kind = "too_short" if length["words"] < length["min_words"] else "too_long"
        found.append({"kind": kind, "section": None,
                      "message": f"{length['words']} words against a target of {length['target']} "
                                 f"(accepted {length['min_words']}-{length['max_words']})"})
    return found

