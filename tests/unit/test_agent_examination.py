"""The `examination` agent: real syntax, complexity, lint and size analysis."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pydantic
import pytest

from chalicelib.agents.base import AgentOutput
from chalicelib.agents.examination import ExaminationAgent, ExaminationInput
from chalicelib.agents.registry import get_agent, validate_input
from chalicelib.errors import AgentInputError, ValidationError

REPO_ROOT = Path(__file__).resolve().parents[2]

# Line numbers matter below: keep this text as it is.
INVENTORY = '''\
import os
import sys


def classify(values, limit):
    """Label each value."""
    out = []
    for v in values:
        if v > limit and v % 2:
            out.append("big-odd")
        elif v < 0:
            out.append("negative")
        else:
            out.append(fallback_label)
    return out


class Shape:
    def area(self):
        return 0

    def describe(self, verbose):
        if verbose:
            return "a shape"
        return ""
'''

CLEAN = '''\
# settings
LIMIT = 3


def double(x):
    """Twice x."""
    return x * 2  # cheap
'''


def run(source: str, **extra: Any) -> AgentOutput:
    agent = get_agent("examination")
    return agent.run(ExaminationInput.model_validate({"source": source, **extra}), {})


def test_registry_returns_the_examination_agent() -> None:
    agent = get_agent("examination")
    assert isinstance(agent, ExaminationAgent)
    assert agent.type == "examination"
    assert agent.Input is ExaminationInput


def test_complexity_per_block() -> None:
    output = run(INVENTORY).output

    assert output["valid_syntax"] is True
    assert output["syntax_errors"] == []
    assert output["functions"] == [
        # 1 + for + if + `and` + elif (else adds no path).
        {"name": "classify", "type": "function", "line": 5, "end_line": 15, "complexity": 5, "rank": "A"},
        # radon rates a class as int(sum of its body / methods) + 1 when it has several methods.
        {"name": "Shape", "type": "class", "line": 18, "end_line": 25, "complexity": 3, "rank": "A"},
        {"name": "Shape.area", "type": "method", "line": 19, "end_line": 20, "complexity": 1, "rank": "A"},
        {"name": "Shape.describe", "type": "method", "line": 22, "end_line": 25, "complexity": 2, "rank": "A"},
    ]
    assert output["average_complexity"] == 2.75
    assert output["max_complexity"] == 5
    assert output["summary"] == {"functions": 4, "lint_findings": 3, "high_complexity": 0}


def test_high_complexity_is_counted_and_ranked() -> None:
    branches = "".join(f"    if kind == {i}:\n        return {i}\n" for i in range(11))
    source = f"def route(kind, n):\n{branches}    return n\n"

    output = run(source).output

    (route,) = output["functions"]
    assert (route["complexity"], route["rank"]) == (12, "C")
    assert output["summary"]["high_complexity"] == 1


def test_lint_findings_with_lines_and_codes() -> None:
    lint = run(INVENTORY).output["lint"]

    assert lint == [
        {"line": 1, "column": 1, "code": "UnusedImport", "message": "'os' imported but unused"},
        {"line": 2, "column": 1, "code": "UnusedImport", "message": "'sys' imported but unused"},
        {"line": 14, "column": 24, "code": "UndefinedName", "message": "undefined name 'fallback_label'"},
    ]


def test_clean_code_has_no_findings() -> None:
    result = run(CLEAN)
    output = result.output

    assert output["lint"] == []
    assert output["summary"] == {"functions": 1, "lint_findings": 0, "high_complexity": 0}
    assert output["raw"] == {
        "loc": 7,
        "lloc": 4,
        "sloc": 3,
        "comments": 2,
        "multi": 0,
        "blank": 2,
        "single_comments": 2,
    }
    assert output["maintainability_index"] == 100.0
    assert result.metrics["lines"] == 7
    assert isinstance(result.metrics["duration_ms"], float)


def test_maintainability_drops_for_tangled_code() -> None:
    mi = run(INVENTORY).output["maintainability_index"]

    assert 0 < mi < 100
    assert round(mi, 2) == mi


def test_syntax_error_is_located_and_still_reported() -> None:
    source = "total = 0\n\ndef add(x:\n    return x\n"

    result = run(source, filename="broken.py")
    output = result.output

    assert output["valid_syntax"] is False
    (error,) = output["syntax_errors"]
    assert error["line"] == 3
    assert error["text"] == "def add(x:"
    assert isinstance(error["column"], int)
    assert "never closed" in error["message"]
    assert output["functions"] == []
    assert output["average_complexity"] is None
    assert output["max_complexity"] is None
    assert output["maintainability_index"] is None
    assert output["lint"] == []
    assert result.metrics["lines"] == 4


def test_null_bytes_are_a_syntax_error_without_a_line() -> None:
    output = run("x = 1\x00\n").output

    assert output["valid_syntax"] is False
    (error,) = output["syntax_errors"]
    assert "null bytes" in error["message"]


def test_long_offending_line_is_truncated() -> None:
    source = "x = [" + "1, " * 10_000 + "\n"

    (error,) = run(source).output["syntax_errors"]

    assert error["line"] == 1
    assert len(error["text"]) == 200


def test_code_without_blocks() -> None:
    output = run("print('hi')\n").output

    assert output["functions"] == []
    assert output["average_complexity"] == 0.0
    assert output["max_complexity"] == 0


def test_parse_time_warnings_do_not_escape() -> None:
    # "\d" is an invalid escape: a SyntaxWarning (an error under -W error).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        output = run("PATTERN = '\\d+'\nprint(PATTERN)\n").output

    assert output["valid_syntax"] is True


def test_too_deeply_nested_source_is_an_input_error() -> None:
    with pytest.raises(AgentInputError, match="nested too deeply"):
        run("x = (\n" + "+\n".join(["1"] * 30_000) + ")\n")


def test_output_is_json_serialisable() -> None:
    for source in (INVENTORY, "def f(:\n"):
        output = run(source).output
        assert json.loads(json.dumps(output)) == output


@pytest.mark.parametrize(
    ("input_data", "loc", "error_type"),
    [
        ({"source": ""}, ("source",), "string_too_short"),
        ({"source": "x" * 500_001}, ("source",), "string_too_long"),
        ({"source": "x = 1", "filename": "f" * 256}, ("filename",), "string_too_long"),
        ({"source": "x = 1", "lang": "py"}, ("lang",), "extra_forbidden"),
        ({}, ("source",), "missing"),
    ],
)
def test_input_model_rejects_bad_input(input_data: dict[str, Any], loc: tuple[str, ...], error_type: str) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        ExaminationInput.model_validate(input_data)

    assert [(err["loc"], err["type"]) for err in caught.value.errors()] == [(loc, error_type)]


def test_validate_input_defaults_filename_and_lists_bad_locations() -> None:
    assert validate_input("examination", {"source": "x = 1"}) == {"source": "x = 1", "filename": "input.py"}

    with pytest.raises(ValidationError) as caught:
        validate_input("examination", {"source": 42, "mode": "fast"})

    locs = sorted(err["loc"] for err in caught.value.details["errors"])
    assert locs == [["input_data", "mode"], ["input_data", "source"]]


def test_analysers_are_not_imported_with_the_module() -> None:
    code = (
        "import sys, chalicelib.agents.examination; print(sorted(m for m in ('radon', 'pyflakes') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
