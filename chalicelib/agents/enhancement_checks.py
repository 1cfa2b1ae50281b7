"""Deterministic improvement checks for the `enhancement` agent, one function per kind.

Each returns suggestions {severity, category, rule, message, location}
with 1-based lines. Code reuses the examination analysis (syntax, radon
complexity, pyflakes) and adds missing docstrings; configuration is parsed
as JSON, or else read line by line as YAML/INI/.env-style `key: value` /
`key = value`, to find duplicate keys and values that look like secrets in
clear; documents reuse the editing diagnostics.
"""

from __future__ import annotations

import ast
import json
import re
import warnings
from collections.abc import Iterator
from typing import Any

from chalicelib.agents import textstats
from chalicelib.agents.examination import HIGH_COMPLEXITY, examine
from chalicelib.errors import AgentInputError

VERY_HIGH_COMPLEXITY = 20
LINT_SEVERITY = {"UndefinedName": "high", "UndefinedLocal": "high", "UndefinedExport": "high",
                 "UnusedImport": "low", "UnusedVariable": "low", "RedefinedWhileUnused": "medium"}
SECRET_KEY = re.compile(r"pass(word|wd|phrase)?$|secret|token|api[_-]?key|apikey|private[_-]?key|access[_-]?key|"
                        r"credential|client[_-]?secret", re.IGNORECASE)
#: keys that name where a secret lives, or describe it, rather than hold it.
REFERENCE_KEY = re.compile(r"(_|-|\b)(arn|url|uri|file|path|env|name|id|ttl|length|type|header)$", re.IGNORECASE)
REFERENCE_VALUE = re.compile(r"^(\$\{|\{\{|\$[A-Z_]|arn:|env:|ssm:|vault:|secretsmanager:|!Ref|!Sub|<.*>$)")
SECRET_VALUE = re.compile(r"AKIA[0-9A-Z]{16}|ASIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----|"
                          r"\bsk-[A-Za-z0-9_-]{20,}|\bgh[pousr]_[A-Za-z0-9]{36}|\bxox[abprs]-[A-Za-z0-9-]{10,}|"
                          r"://[^/\s:@]+:[^/\s@]+@")
KEY_LINE = re.compile(r"^(?P<indent>[ \t]*)(?P<item>-\s+)?(?:export\s+)?"
                      r"(?P<key>[A-Za-z0-9_.\-/]+|\"[^\"]+\"|'[^']+')\s*(?::(?=\s|$)|=)\s*(?P<value>.*)$")
BLOCK_SCALAR = re.compile(r"^[|>][+-]?\d*$")
JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
#: `str.lstrip()` then ':' (\s is str.isspace's whitespace, as lstrip's is).
KEY_COLON = re.compile(r"\s*:")
MAX_JSON_DEPTH = 64


def suggestion(severity: str, category: str, rule: str, message: str, line: int | None = None,
               **location: Any) -> dict[str, Any]:
    return {"severity": severity, "category": category, "rule": rule, "message": message,
            "location": {"line": line, **location}}


# --- code ----------------------------------------------------------------------------------------


def code_checks(source: str, filename: str) -> list[dict[str, Any]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = examine(source, filename)
    found = [suggestion("critical", "correctness", "syntax-error", f"fix the syntax error: {err['message']}",
                        err["line"], column=err["column"]) for err in report["syntax_errors"]]
    for block in report["functions"]:
        if block["complexity"] > HIGH_COMPLEXITY:
            found.append(suggestion(
                "high" if block["complexity"] > VERY_HIGH_COMPLEXITY else "medium", "maintainability", "complexity",
                f"split {block['type']} {block['name']}: cyclomatic complexity {block['complexity']} "
                f"(rank {block['rank']}) is above {HIGH_COMPLEXITY}", block["line"], end_line=block["end_line"]))
    for item in report["lint"]:
        found.append(suggestion(LINT_SEVERITY.get(item["code"], "medium"), "correctness", f"lint:{item['code']}",
                                item["message"], item["line"], column=item["column"]))
    if report["valid_syntax"]:
        found.extend(_missing_docstrings(source, filename))
    return found


def _missing_docstrings(source: str, filename: str) -> list[dict[str, Any]]:
    tree = ast.parse(source, filename)
    found = []
    public = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
              and not node.name.startswith("_")]
    if public and ast.get_docstring(tree) is None:
        found.append(suggestion("low", "documentation", "missing-docstring",
                                "add a module docstring saying what this module is for", 1))
    for node in public:
        if ast.get_docstring(node) is None:
            kind = "class" if isinstance(node, ast.ClassDef) else "function"
            found.append(suggestion("low", "documentation", "missing-docstring",
                                    f"add a docstring to {kind} {node.name}", node.lineno))
    return found


# --- configuration ---------------------------------------------------------------------------------


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as its key/value pairs, duplicates kept, in document order."""


def config_checks(text: str, filename: str | None) -> tuple[str, list[dict[str, Any]]]:
    """(format read, suggestions)."""
    if (filename or "").lower().endswith(".json") or text.lstrip()[:1] in ("{", "["):
        return "json", _json_checks(text)
    return "key-value", _key_value_checks(text)


def _json_checks(text: str) -> list[dict[str, Any]]:
    try:
        value = json.loads(text, object_pairs_hook=_Pairs)
    except json.JSONDecodeError as exc:
        return [suggestion("critical", "correctness", "invalid-json", f"fix the JSON: {exc.msg}", exc.lineno,
                           column=exc.colno)]
    except RecursionError:
        value = too_deep = True  # about 1,000 levels: deeper than the check below allows anyway
    else:
        too_deep = _too_deep(value)
    if too_deep:
        # The walk below recurses per level; a deep document would exhaust the stack (RecursionError).
        raise AgentInputError(f"the JSON is nested more than {MAX_JSON_DEPTH} levels deep; not analysed",
                              {"max_depth": MAX_JSON_DEPTH})
    key_lines = _json_key_lines(text)
    found: list[dict[str, Any]] = []
    _walk(value, "", key_lines, found)
    return found


def _json_key_lines(text: str) -> Iterator[int]:
    # Strings never overlap and valid JSON has no quote outside them: in order, a string followed by ':' is a key.
    # The colon is matched in place and lines are counted as the matches advance: slicing the rest of the text
    # and counting from the start for every string made this quadratic.
    line, counted = 1, 0
    for match in JSON_STRING.finditer(text):
        if KEY_COLON.match(text, match.end()):
            line += text.count("\n", counted, match.start())
            counted = match.start()
            yield line


def _too_deep(value: Any) -> bool:
    """Whether arrays/objects nest deeper than MAX_JSON_DEPTH, found without recursion."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, _Pairs | list):
            if depth > MAX_JSON_DEPTH:
                return True
            children = (child for _, child in node) if isinstance(node, _Pairs) else node
            stack.extend((child, depth + 1) for child in children)
    return False


def _walk(value: Any, pointer: str, key_lines: Iterator[int], found: list[dict[str, Any]]) -> None:
    if isinstance(value, _Pairs):
        seen: dict[str, int] = {}
        for key, child in value:
            line = next(key_lines, None)
            path = f"{pointer}/{key.replace('~', '~0').replace('/', '~1')}"
            if key in seen:
                found.append(_duplicate(key, line, seen[key], path))
            else:
                seen[key] = line or 0
            if isinstance(child, str):
                found.extend(_secret(key, child, line, path))
            _walk(child, path, key_lines, found)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _walk(item, f"{pointer}/{i}", key_lines, found)


def _key_value_checks(text: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    seen: dict[tuple[str, ...], dict[str, int]] = {}
    stack: list[tuple[int, str]] = []  # (indent, key or list-item marker)
    items: dict[tuple[str, ...], int] = {}  # last list-item index per parent
    section = ""
    block_indent: int | None = None  # inside a YAML block scalar (key: |) deeper lines are text
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        indent = len(raw) - len(raw.lstrip())
        if block_indent is not None and (not stripped or indent > block_indent):
            continue
        block_indent = None
        if not stripped or stripped.startswith(("#", ";", "//")):
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            section, stack = stripped[1:-1].strip(), []
            continue
        match = KEY_LINE.match(raw)
        if match is None:
            continue
        if match.group("item"):
            while stack and stack[-1][0] >= indent:
                stack.pop()
            parent = (section, *(k for _, k in stack))
            items[parent] = items.get(parent, -1) + 1
            stack.append((indent, f"[{items[parent]}]"))  # each list item is a mapping of its own
            indent += len(match.group("item"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = match.group("key").strip("\"'")
        scope = (section, *(k for _, k in stack))
        path = "/".join(p for p in (*scope, key) if p)
        keys = seen.setdefault(scope, {})
        if key in keys:
            found.append(_duplicate(key, number, keys[key], path))
        else:
            keys[key] = number
        value = _plain_value(match.group("value"))
        if BLOCK_SCALAR.match(value):
            block_indent = indent
        elif value:
            found.extend(_secret(key, value, number, path))
        stack.append((indent, key))
    return found


def _plain_value(value: str) -> str:
    value = value.strip()
    if value[:1] in ("'", '"') and value[-1:] == value[:1] and len(value) > 1:
        return value[1:-1]
    return re.sub(r"\s+#.*$", "", value)


def _duplicate(key: str, line: int | None, first: int, path: str) -> dict[str, Any]:
    return suggestion("high", "correctness", "duplicate-key",
                      f"key {key!r} is defined twice (first on line {first}); only one value takes effect",
                      line, path=path)


def _secret(key: str, value: str, line: int | None, path: str) -> list[dict[str, Any]]:
    if SECRET_VALUE.search(value):
        reason = "looks like a credential"
    elif SECRET_KEY.search(key) and not REFERENCE_KEY.search(key) and not REFERENCE_VALUE.match(value):
        reason = "is a secret in plain text"
    else:
        return []
    return [suggestion("high", "security", "plaintext-secret",
                       f"the value of {key!r} {reason}: move it to a secret store (e.g. Secrets Manager) and "
                       "reference it", line, path=path)]


# --- documents --------------------------------------------------------------------------------------


def document_checks(text: str, long_sentence_words: int = 25, overuse_threshold: int = 3) -> list[dict[str, Any]]:
    d = textstats.diagnose(text, long_sentence_words, overuse_threshold)
    found = [suggestion("medium", "clarity", "long-sentence",
                        f"split sentence {s['sentence']}: {s['words']} words (over {long_sentence_words})",
                        s["line"], sentence=s["sentence"]) for s in d["long_sentences"]]
    found += [suggestion("medium", "correctness", "repeated-word", f"remove the repeated word in {r['text']!r}",
                         r["line"]) for r in d["repeated_words"]]
    found += [suggestion("low", "style", "passive-voice", f"prefer the active voice to {p['text']!r}", p["line"])
              for p in d["passive_voice"]]
    found += [suggestion("low", "style", "overused-word", f"vary the word {o['word']!r}, used {o['count']} times")
              for o in d["overused_words"]]
    score = d["flesch_reading_ease"]
    if score is not None and score < 50:
        found.append(suggestion("medium", "clarity", "readability",
                                f"make it easier to read: Flesch reading ease {score} ({d['readability']}); "
                                "use shorter sentences and words"))
    return found
