"""The examination agent's worst functions and its A-F grade: the rubric's boundaries and the stated rule."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.agents.examination import ExaminationInput, examine
from chalicelib.agents.grading import CRITERIA, grade, lint_density, worst_functions
from chalicelib.agents.registry import get_agent

BY_KEY = {c.key: c for c in CRITERIA}


def router(branches: int, name: str = "route") -> str:
    body = "".join(f"    if kind == {i}:\n        return {i}\n" for i in range(branches))
    return f"def {name}(kind, n):\n{body}    return n\n"


SMALL_HELPERS = "\n\ndef one():\n    return 1\n\n\ndef two():\n    return 2\n\n\ndef three():\n    return 3\n"


@pytest.mark.parametrize(
    ("criterion", "value", "expected"),
    [
        ("max_complexity", 10, ("A", "<= 10")), ("max_complexity", 11, ("B", "<= 15")),
        ("max_complexity", 15, ("B", "<= 15")), ("max_complexity", 16, ("C", "<= 20")),
        ("max_complexity", 20, ("C", "<= 20")), ("max_complexity", 21, ("D", "<= 30")),
        ("max_complexity", 30, ("D", "<= 30")), ("max_complexity", 31, ("F", "> 30")),
        ("average_complexity", 5.0, ("A", "<= 5")), ("average_complexity", 5.01, ("B", "<= 10")),
        ("average_complexity", 30.5, ("F", "> 30")),
        ("lint_per_100_lines", 1.0, ("A", "<= 1")), ("lint_per_100_lines", 1.01, ("B", "<= 3")),
        ("lint_per_100_lines", 6.0, ("C", "<= 6")), ("lint_per_100_lines", 10.0, ("D", "<= 10")),
        ("lint_per_100_lines", 10.5, ("F", "> 10")),
        ("maintainability_index", 40.0, ("A", ">= 40")), ("maintainability_index", 39.99, ("B", ">= 30")),
        ("maintainability_index", 20.0, ("C", ">= 20")), ("maintainability_index", 10.0, ("D", ">= 10")),
        ("maintainability_index", 9.99, ("F", "< 10")),
    ],
)
def test_rubric_boundaries(criterion: str, value: float, expected: tuple[str, str]) -> None:
    assert BY_KEY[criterion].grade(value) == expected


def test_lint_density_counts_small_files_as_fifty_lines() -> None:
    assert lint_density(1, 100) == 1.0
    assert lint_density(3, 200) == 1.5
    assert lint_density(1, 10) == 2.0  # one finding in a snippet is not 10 per 100 lines
    assert lint_density(0, 0) == 0.0


def report(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "valid_syntax": True, "syntax_errors": [], "max_complexity": 4, "average_complexity": 2.0,
        "functions": [{"name": "f", "type": "function", "line": 1, "end_line": 9, "complexity": 4}],
        "lint": [], "raw": {"sloc": 120}, "maintainability_index": 70.0,
    }
    return {**base, **overrides}


def test_the_worst_criterion_sets_the_grade_and_the_rule_names_every_one_that_did() -> None:
    graded = grade(report(max_complexity=18, maintainability_index=25.0, lint=[{}] * 2))

    assert graded["grade"] == "C"
    assert graded["grade_rule"] == (
        "C: the worst criterion sets the grade: max complexity 18 (f, line 1) <= 20 → C; "
        "maintainability index 25 >= 20 → C")
    assert [(e["criterion"], e["grade"]) for e in graded["grade_breakdown"]] == [
        ("syntax", "A"), ("max_complexity", "C"), ("average_complexity", "A"), ("lint_per_100_lines", "B"),
        ("maintainability_index", "C")]


def test_an_all_a_file_says_so() -> None:
    graded = grade(report())

    assert graded["grade"] == "A"
    assert graded["grade_rule"].startswith("A: every criterion meets its A threshold (max complexity 4 (f, line 1)")


def test_unparsable_source_is_f() -> None:
    output = examine("total = 0\n\ndef add(x:\n    return x\n", "broken.py")

    assert output["grade"] == "F"
    assert output["grade_rule"] == "F: the source does not parse (line 3), so nothing else can be measured"
    assert output["worst_functions"] == []


def test_real_source_one_complex_function_among_simple_ones_is_b() -> None:
    output = examine(router(11) + SMALL_HELPERS, "routes.py")

    assert output["grade"] == "B"
    assert output["grade_rule"] == "B: the worst criterion sets the grade: max complexity 12 (route, line 1) <= 15 → B"
    breakdown = {e["criterion"]: (e["value"], e["grade"]) for e in output["grade_breakdown"]}
    assert breakdown["average_complexity"] == (3.75, "A")  # (12 + 1 + 1 + 1) / 4
    assert breakdown["lint_per_100_lines"] == (0.0, "A")
    assert breakdown["maintainability_index"][1] == "A"


def test_real_source_lint_findings_in_a_small_file() -> None:
    source = "import os\nimport sys\n\n\ndef f(x):\n    return x + undefined_name\n"

    output = examine(source, "f.py")

    # 3 findings over max(sloc 4, 50) lines = 6 per 100 lines: C's upper bound.
    assert output["grade"] == "C"
    assert output["grade_rule"] == (
        "C: the worst criterion sets the grade: "
        "3 lint finding(s) in 4 lines (counted as 50) = 6 per 100 lines <= 6 → C")


def test_worst_functions_rank_by_complexity_then_length_and_leave_classes_out() -> None:
    source = "\n\n".join([
        router(3, "small"),  # complexity 4, 8 lines
        router(3, "same_but_longer").replace("return n\n", "n += 1\n    return n\n"),  # 4, 9 lines
        router(6, "big"),  # 7
        "class Shape:\n    def area(self):\n        return 0\n",
        router(1, "tiny"), router(2, "two"), router(0, "zero"),
    ])

    worst = examine(source, "w.py")["worst_functions"]

    assert [(f["name"], f["complexity"], f["length"]) for f in worst] == [
        ("big", 7, 14), ("same_but_longer", 4, 9), ("small", 4, 8), ("two", 3, 6), ("tiny", 2, 4)]
    assert all(f["type"] != "class" for f in worst)


def test_worst_functions_is_empty_without_functions() -> None:
    assert worst_functions([]) == []
    assert examine("print('hi')\n", "x.py")["worst_functions"] == []


def test_grade_arrives_through_the_agent() -> None:
    agent = get_agent("examination")

    output = agent.run(ExaminationInput.model_validate({"source": router(11) + SMALL_HELPERS}), {}).output

    assert (output["grade"], output["worst_functions"][0]["name"]) == ("B", "route")
