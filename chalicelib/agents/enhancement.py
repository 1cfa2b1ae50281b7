"""The `enhancement` agent: ranked, located improvement suggestions for code, documents or configuration.

Deterministic checks always run (chalicelib.agents.enhancement_checks). When
a provider is configured (by the agent or the stage) the model is asked for
more, given the text with line numbers and the findings already made; its
suggestions are merged in, dropping any that repeat one already listed (same
line and mostly the same words). Without a provider the agent still answers,
with `provider: null` — it is not provider-only. A provider outage (timeouts,
5xx, an open circuit, an unreadable answer) is reported in `provider.error`
while the deterministic suggestions are still returned; a misconfiguration
or an exceeded token/time limit fails the task.

Ranking: severity (critical, high, medium, low), then line (document-wide
last), then column, deterministic before model, then message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.agents.base import Agent, AgentContext, AgentOutput
from chalicelib.agents.input_limits import MAX_LINE_CHARS, line_schema, lines_within
from chalicelib.agents.provider_support import extract_json, load_config, optional_session
from chalicelib.providers.config import ProviderConfig
from chalicelib.providers.errors import ProviderBadResponseError, ProviderError
from chalicelib.providers.session import LLMSession

#: the code analysis (radon, pyflakes) takes ~1 s per 100 KB on one core (measured).
MAX_CONTENT = 200_000
SEVERITIES = ("critical", "high", "medium", "low")
#: two suggestions on one line sharing this fraction of their words say the same thing.
SAME_WORDS = 0.5
MAX_MODEL_SUGGESTIONS = 50
#: provider failures that leave the deterministic answer standing (reported in `provider.error`).
DEGRADE_ON = frozenset({"PROVIDER_UNAVAILABLE", "PROVIDER_TIMEOUT", "PROVIDER_RATE_LIMITED", "PROVIDER_BAD_RESPONSE"})


class EnhancementInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["code", "document", "config"] = Field(description="What `content` is.")
    content: Annotated[str, lines_within()] = Field(
        min_length=1, max_length=MAX_CONTENT, json_schema_extra=line_schema(),
        description=f"Up to {MAX_CONTENT:,} characters, lines up to {MAX_LINE_CHARS:,}.")
    filename: str | None = Field(default=None, min_length=1, max_length=255,
                                 description="Code is analysed as Python unless the name says otherwise.")
    focus: str | None = Field(default=None, max_length=2000, description="What the model should look at.")


class EnhancementConfig(ProviderConfig):
    max_tokens: int = Field(default=2048, ge=1, le=200_000, description="Output tokens per model call")
    max_suggestions: int = Field(default=50, ge=1, le=500)
    long_sentence_words: int = Field(default=25, ge=5, le=200)


class EnhancementAgent(Agent):
    type = "enhancement"
    Input = EnhancementInput
    Config = EnhancementConfig
    provider_backed = True
    description = ("Suggests concrete, located improvements to code, documents or configuration, ranked by "
                   "severity: deterministic checks first, then the language model's suggestions when configured.")
    capabilities = ("python-complexity", "lint", "docstrings", "json", "yaml-ini-env", "duplicate-keys",
                    "plaintext-secrets", "writing-diagnostics", "model-suggestions")
    example_input = {
        "kind": "config",
        "filename": "service.yaml",
        "content": "database:\n  host: db.internal\n  password: hunter2\n  host: db2.internal\nlog_level: info\n",
    }

    def run(self, data: BaseModel, config: Mapping[str, Any], ctx: AgentContext | None = None) -> AgentOutput:
        assert isinstance(data, EnhancementInput)
        cfg = load_config(EnhancementConfig, config)
        session = optional_session(cfg, ctx)
        checks, found = _deterministic(data, cfg)
        provider: dict[str, Any] | None = None
        if session is not None:
            provider = {**session.endpoint.describe(), "suggestions": 0}
            try:
                added = _merge(found, _ask_model(session, data, found))
                provider["suggestions"] = added
            except ProviderError as exc:
                if exc.code not in DEGRADE_ON:
                    raise
                provider["error"] = {"code": exc.code, "message": exc.message}
            provider["usage"] = session.usage.as_dict()
        ranked = rank(found)
        shown = ranked[:cfg.max_suggestions]
        counts = {s: sum(1 for item in ranked if item["severity"] == s) for s in SEVERITIES}
        metrics: dict[str, Any] = {"suggestions": len(ranked), **{f"suggestions_{k}": v for k, v in counts.items()}}
        if session is not None:
            metrics.update(session.metrics())
        return AgentOutput(
            output={"kind": data.kind, "suggestions": shown, "total": len(ranked),
                    "truncated": len(ranked) > len(shown), "counts": counts, "checks": checks, "provider": provider},
            metrics=metrics,
        )


def _deterministic(data: EnhancementInput, cfg: EnhancementConfig) -> tuple[list[str], list[dict[str, Any]]]:
    from chalicelib.agents import enhancement_checks as checks

    if data.kind == "code":
        name = data.filename or "input.py"
        if not name.lower().endswith((".py", ".pyi")):
            return [], []  # only Python has deterministic analysis; the model may still help
        found = checks.code_checks(data.content, name)
        names = ["python-syntax", "cyclomatic-complexity", "pyflakes", "docstrings"]
    elif data.kind == "config":
        fmt, found = checks.config_checks(data.content, data.filename)
        names = [f"{fmt}-parse", "duplicate-keys", "plaintext-secrets"]
    else:
        found = checks.document_checks(data.content, cfg.long_sentence_words)
        names = ["long-sentences", "repeated-words", "passive-voice", "overused-words", "readability"]
    for item in found:
        item["source"] = "deterministic"
    return names, found


def _ask_model(session: LLMSession, data: EnhancementInput, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    lines = data.content.splitlines()
    numbered = "\n".join(f"{i:>5} | {line}" for i, line in enumerate(lines, 1))
    known = "\n".join(f"- line {f['location']['line']}: {f['message']}" for f in found[:40]) or "- none"
    system = (f"You review {data.kind} and suggest concrete improvements. Reply with a JSON array only, no prose: "
              '[{"line": <line number or null for the whole text>, "severity": "critical" | "high" | "medium" | '
              '"low", "message": "<what to change and why, one sentence>"}]. At most 20 items. '
              "Do not repeat findings already made.")
    prompt = (f"{'Focus: ' + data.focus + chr(10) if data.focus else ''}Findings already made:\n{known}\n\n"
              f"{data.kind.capitalize()} ({data.filename or 'untitled'}), with line numbers:\n{numbered}")
    completion = session.complete(prompt, system=system)
    try:
        items = extract_json(completion.text)
    except ValueError as exc:
        raise ProviderBadResponseError("the model's suggestions are not the requested JSON array",
                                       {"answer_start": completion.text[:200]}) from exc
    if isinstance(items, dict):
        items = items.get("suggestions")
    if not isinstance(items, list):
        raise ProviderBadResponseError("the model's suggestions are not a JSON array", {})
    return [s for s in (_from_model(item, len(lines)) for item in items[:MAX_MODEL_SUGGESTIONS]) if s]


def _from_model(item: Any, line_count: int) -> dict[str, Any] | None:
    if not isinstance(item, dict) or not isinstance(item.get("message"), str) or not item["message"].strip():
        return None
    line = item.get("line")
    severity = str(item.get("severity", "medium")).lower()
    return {"severity": severity if severity in SEVERITIES else "low" if severity == "info" else "medium",
            "category": "model", "rule": "model", "message": item["message"].strip()[:500],
            "location": {"line": line if isinstance(line, int) and 1 <= line <= line_count else None},
            "source": "provider"}


def _merge(found: list[dict[str, Any]], extra: list[dict[str, Any]]) -> int:
    """Append the model's suggestions that say something new; returns how many."""
    added = 0
    for item in extra:
        words = _words(item["message"])
        if any(_same(item, words, kept) for kept in found):
            continue
        found.append(item)
        added += 1
    return added


def _words(message: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9_]+", message.lower()) if len(w) > 2}


def _same(item: dict[str, Any], words: set[str], kept: dict[str, Any]) -> bool:
    other = _words(kept["message"])
    if words == other:
        return True
    if item["location"]["line"] != kept["location"]["line"] or not words or not other:
        return False
    return len(words & other) / len(words | other) >= SAME_WORDS


def rank(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def key(item: dict[str, Any]) -> tuple[Any, ...]:
        loc = item["location"]
        line = loc.get("line")
        return (SEVERITIES.index(item["severity"]), line is None, line or 0, loc.get("column") or 0,
                item["source"] != "deterministic", item["message"])

    return [{"rank": n, **item} for n, item in enumerate(sorted(items, key=key), 1)]
