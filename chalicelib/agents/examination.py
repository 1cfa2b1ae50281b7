"""The `examination` agent: static analysis of one Python source file.

It reports syntax errors, cyclomatic complexity per block (radon), lint
findings (pyflakes), raw line counts and the maintainability index, the five
worst functions, and an overall grade A-F with the rule that produced it (the
rubric is in chalicelib/agents/grading.py). Line and column numbers are
1-based, as editors and flake8-style tools show them.
radon and pyflakes are imported inside `run` to stay off the cold-start path.
"""

from __future__ import annotations

import ast
import time
import warnings
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.agents.base import Agent, AgentContext, AgentOutput
from chalicelib.agents.grading import grade, worst_functions
from chalicelib.agents.input_limits import MAX_LINE_CHARS, line_schema, lines_within
from chalicelib.errors import AgentInputError

#: Above this a block is hard to test and change (radon's C rank starts at 11).
HIGH_COMPLEXITY = 10
#: radon, pyflakes and the tokenizer take ~1 s per 100 KB on one core (490 KB took 5.5-10.8 s, measured).
MAX_SOURCE = 200_000
#: Characters of the offending line echoed back with a syntax error.
MAX_ERROR_TEXT = 200


class ExaminationInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Annotated[str, lines_within()] = Field(
        min_length=1, max_length=MAX_SOURCE, json_schema_extra=line_schema(),
        description=f"Python source code to examine: up to {MAX_SOURCE:,} characters, lines up to {MAX_LINE_CHARS:,}.")
    filename: str = Field(
        default="input.py", min_length=1, max_length=255, description="Name the source is compiled and linted under."
    )


class ExaminationAgent(Agent):
    type = "examination"
    Input = ExaminationInput
    isolated = True
    description = ("Examines Python source: syntax, cyclomatic complexity, lint findings and maintainability; lists "
                   "the worst functions and grades the file A-F with the rule that set the grade.")
    example_input = {
        "source": "import os\n\ndef grade(score):\n    if score > 90:\n        return 'A'\n"
                  "    elif score > 75:\n        return 'B'\n    return 'C'\n",
        "filename": "grades.py",
    }
    capabilities = ("python", "syntax-check", "cyclomatic-complexity", "lint", "raw-metrics", "maintainability-index",
                    "worst-functions", "grade")

    def run(self, data: BaseModel, config: Mapping[str, Any], ctx: AgentContext | None = None) -> AgentOutput:
        assert isinstance(data, ExaminationInput)
        started = time.perf_counter()
        # Invalid escapes and the like warn at parse time; they are not findings
        # this report promises, and must not leak into the worker's logs.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            output = examine(data.source, data.filename)
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        lines = output["raw"]["loc"] if output["raw"] else len(data.source.splitlines())
        return AgentOutput(output=output, metrics={"duration_ms": duration_ms, "lines": lines})


def examine(source: str, filename: str) -> dict[str, Any]:
    try:
        return _examine(source, filename)
    except RecursionError as exc:
        # Valid but deeply nested code (say, a 1000-term sum) exhausts the
        # recursive compiler or tree walkers. It is not a syntax error, so
        # say what happened instead of reporting it as one.
        raise AgentInputError(
            "the source is nested too deeply to analyse",
            {"filename": filename, "reason": "maximum recursion depth exceeded"},
        ) from exc


def _examine(source: str, filename: str) -> dict[str, Any]:
    tree, syntax_error = _parse(source, filename)
    raw = _raw_metrics(source)
    functions: list[dict[str, Any]] = []
    lint: list[dict[str, Any]] = []
    maintainability: float | None = None
    if tree is not None:
        functions, total_complexity = _complexity(tree)
        lint = _lint(tree, filename)
        maintainability = _maintainability(tree, raw, total_complexity)
    complexities = [f["complexity"] for f in functions]
    report = {
        "valid_syntax": tree is not None,
        "syntax_errors": [syntax_error] if syntax_error else [],
        "functions": functions,
        # Unknown (None) when unparsable; 0 when parsable but without blocks.
        "average_complexity": (
            None if tree is None else round(sum(complexities) / len(complexities), 2) if complexities else 0.0
        ),
        "max_complexity": None if tree is None else max(complexities, default=0),
        "lint": lint,
        "raw": raw,
        "maintainability_index": maintainability,
        "summary": {
            "functions": len(functions),
            "lint_findings": len(lint),
            "high_complexity": sum(1 for c in complexities if c > HIGH_COMPLEXITY),
        },
        "worst_functions": worst_functions(functions),
    }
    return {**report, **grade(report)}


def _parse(source: str, filename: str) -> tuple[ast.Module | None, dict[str, Any] | None]:
    try:
        tree = compile(source, filename, "exec", flags=ast.PyCF_ONLY_AST, dont_inherit=True)
    except SyntaxError as exc:
        # The offending line is echoed back; a minified one-line file must
        # not double the size of the report.
        text = exc.text.rstrip("\r\n")[:MAX_ERROR_TEXT] if exc.text else None
        return None, {"line": exc.lineno, "column": exc.offset, "message": exc.msg, "text": text}
    except ValueError as exc:
        # Older interpreters reject null bytes with ValueError and no position.
        return None, {"line": None, "column": None, "message": str(exc), "text": None}
    assert isinstance(tree, ast.Module)
    return tree, None


def _complexity(tree: ast.Module) -> tuple[list[dict[str, Any]], int]:
    """Blocks by line, and the module's total complexity (the maintainability index reuses it)."""
    from radon.complexity import cc_rank  # type: ignore[import-untyped]
    from radon.visitors import Class, ComplexityVisitor  # type: ignore[import-untyped]

    visitor = ComplexityVisitor.from_ast(tree)
    blocks = []
    for block in visitor.blocks:
        is_class = isinstance(block, Class)
        kind = "class" if is_class else "method" if block.is_method else "function"
        blocks.append(
            {
                "name": block.fullname,
                "type": kind,
                "line": block.lineno,
                "end_line": block.endline,
                "complexity": int(block.complexity),
                "rank": cc_rank(block.complexity),
            }
        )
    # radon returns methods after all functions; by line reads like the file.
    # The name breaks ties so the order never depends on radon's internals.
    blocks.sort(key=lambda b: (b["line"], b["name"]))
    return blocks, int(visitor.total_complexity)


def _lint(tree: ast.Module, filename: str) -> list[dict[str, Any]]:
    from pyflakes.checker import Checker  # type: ignore[import-untyped]

    checker = Checker(tree, filename=filename)
    findings = [
        {
            "line": msg.lineno,
            "column": msg.col + 1,
            "code": type(msg).__name__,
            "message": msg.message % msg.message_args,
        }
        for msg in checker.messages
    ]
    findings.sort(key=lambda f: (f["line"], f["column"], f["code"], f["message"]))
    return findings


def _raw_metrics(source: str) -> dict[str, int] | None:
    from radon.raw import analyze  # type: ignore[import-untyped]

    try:
        module = analyze(source)
    except (SyntaxError, ValueError):
        # radon tokenizes; some unparsable sources cannot even be tokenized.
        return None
    return {key: int(value) for key, value in module._asdict().items()}


def _maintainability(tree: ast.Module, raw: dict[str, int] | None, total_complexity: int) -> float | None:
    """radon's `mi_visit(source, multi=True)` from the tree and counts already made.

    `mi_visit` parses, tokenizes and walks the source again: half of the agent's time on a large file.
    """
    from radon.metrics import h_visit_ast, mi_compute  # type: ignore[import-untyped]

    if raw is None:
        return None
    comment_lines = raw["comments"] + raw["multi"]
    comments = comment_lines / float(raw["sloc"]) * 100 if raw["sloc"] else 0
    return round(float(mi_compute(h_visit_ast(tree).total.volume, total_complexity, raw["lloc"], comments)), 2)
