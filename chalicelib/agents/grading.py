"""The examination agent's overall grade (A-F) and its worst functions. Pure functions over its report.

The rubric: each criterion gives a grade from its own table; the overall grade is the WORST of them, and
`grade_rule` names the criteria that set it, with their values and thresholds.

| criterion                                   | A       | B       | C       | D       | F       |
|---------------------------------------------|---------|---------|---------|---------|---------|
| syntax                                      | parses  |         |         |         | doesn't |
| max cyclomatic complexity of a block        | <= 10   | <= 15   | <= 20   | <= 30   | > 30    |
| average cyclomatic complexity               | <= 5    | <= 10   | <= 20   | <= 30   | > 30    |
| lint findings per 100 lines (pyflakes)      | <= 1    | <= 3    | <= 6    | <= 10   | > 10    |
| maintainability index (radon, 0-100)        | >= 40   | >= 30   | >= 20   | >= 10   | < 10    |

- A source that does not parse is F: nothing else can be measured.
- Lines are radon's source lines of code (sloc), counted as at least 50 so that one finding in a ten-line
  snippet does not weigh like twenty in a real module.
- The complexity tables follow radon's ranks (A-B up to 10, C to 20, D to 30). Maintainability index falls with
  module size, so its A starts at 40 (well-kept modules of a few hundred lines score 40-60); radon itself calls
  >= 20 "A", 10-19 "B" and < 10 "C", which are the C, D and F lines here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GRADES = "ABCDF"
WORST_FUNCTIONS = 5
MIN_LINES_FOR_DENSITY = 50


@dataclass(frozen=True)
class Criterion:
    key: str
    label: str
    #: upper bounds for A, B, C, D (lower bounds when `higher_is_better`); beyond the last is F.
    limits: tuple[float, float, float, float]
    higher_is_better: bool = False

    def grade(self, value: float) -> tuple[str, str]:
        """The grade for `value` and the threshold clause that gave it, e.g. ("B", "<= 15")."""
        for letter, limit in zip(GRADES, self.limits, strict=False):
            if (value >= limit) if self.higher_is_better else (value <= limit):
                return letter, f"{'>=' if self.higher_is_better else '<='} {_num(limit)}"
        return "F", f"{'<' if self.higher_is_better else '>'} {_num(self.limits[-1])}"


CRITERIA = (
    Criterion("max_complexity", "max complexity", (10, 15, 20, 30)),
    Criterion("average_complexity", "average complexity", (5, 10, 20, 30)),
    Criterion("lint_per_100_lines", "lint findings per 100 lines", (1, 3, 6, 10)),
    Criterion("maintainability_index", "maintainability index", (40, 30, 20, 10), higher_is_better=True),
)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def worst_functions(functions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The 5 most complex functions and methods (classes aggregate their methods), longer first on ties."""
    blocks = [{**f, "length": f["end_line"] - f["line"] + 1} for f in functions if f["type"] != "class"]
    blocks.sort(key=lambda f: (-f["complexity"], -f["length"], f["line"], f["name"]))
    return blocks[:WORST_FUNCTIONS]


def lint_density(findings: int, sloc: int) -> float:
    return round(findings * 100 / max(sloc, MIN_LINES_FOR_DENSITY), 2)


def grade(report: dict[str, Any]) -> dict[str, Any]:
    """`grade`, `grade_rule` (a sentence) and `grade_breakdown` (one entry per criterion) for an examination."""
    if not report["valid_syntax"]:
        error = report["syntax_errors"][0] if report["syntax_errors"] else {}
        where = f" (line {error['line']})" if error.get("line") else ""
        rule = f"F: the source does not parse{where}, so nothing else can be measured"
        return {"grade": "F", "grade_rule": rule, "grade_breakdown": [
            {"criterion": "syntax", "value": False, "grade": "F", "threshold": "parses", "detail": "syntax error"}]}
    breakdown: list[dict[str, Any]] = [
        {"criterion": "syntax", "value": True, "grade": "A", "threshold": "parses", "detail": "the source parses"}]
    for criterion, (value, detail) in zip(CRITERIA, _measures(report), strict=True):
        letter, threshold = criterion.grade(value)
        breakdown.append({"criterion": criterion.key, "value": value, "grade": letter, "threshold": threshold,
                          "detail": detail})
    overall = max((str(entry["grade"]) for entry in breakdown), key=lambda letter: GRADES.index(letter))
    deciding = "; ".join(
        f"{e['detail']} {e['threshold']} → {overall}"
        for e in breakdown if e["grade"] == overall and e["criterion"] != "syntax"
    )
    rule = f"A: every criterion meets its A threshold ({deciding})" if overall == "A" else \
        f"{overall}: the worst criterion sets the grade: {deciding}"
    return {"grade": overall, "grade_rule": rule, "grade_breakdown": breakdown}


def _measures(report: dict[str, Any]) -> list[tuple[float, str]]:
    """(value, how it reads in the rule) per criterion, in CRITERIA's order."""
    blocks = [f for f in report["functions"] if f["type"] != "class"] or report["functions"]
    top = max(blocks, key=lambda f: f["complexity"], default=None)
    sloc = report["raw"]["sloc"] if report["raw"] else 0
    findings = len(report["lint"])
    density = lint_density(findings, sloc)
    counted = f" (counted as {MIN_LINES_FOR_DENSITY})" if sloc < MIN_LINES_FOR_DENSITY else ""
    mi = report["maintainability_index"]
    return [
        (report["max_complexity"], f"max complexity {report['max_complexity']}"
                                   + (f" ({top['name']}, line {top['line']})" if top else "")),
        (report["average_complexity"], f"average complexity {_num(report['average_complexity'])} over "
                                       f"{len(report['functions'])} block(s)"),
        (density, f"{findings} lint finding(s) in {sloc} lines{counted} = {_num(density)} per 100 lines"),
        (mi, f"maintainability index {_num(mi)}"),
    ]
