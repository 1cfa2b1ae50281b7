"""Data-quality checks on a list of records: required fields, types, ranges, uniqueness, null ratios.

Pure functions over JSON values. Every rule yields one report entry
{rule, field, fields, expected, passed, violations, examples, ratio}:
- `required`: the field is present and not null; a violation per record where it is missing or null.
- `types`: the field's value has the JSON type named (`integer` accepts 3.0, as JSON Schema does; booleans are
  not numbers). Missing and null values are skipped (that is `required`'s and `max_null_ratio`'s business);
  so the type `null` reports the present values that are not null.
- `ranges`: min/max inclusive, numbers against numeric bounds, strings (ISO dates) against string bounds; a
  value of the other kind cannot be in range and is a violation; missing and null values are skipped.
- `unique`: a field or a tuple of fields; every record repeating a key seen earlier is a violation (the first
  occurrence is not). Records with a missing or null part of the key are skipped, as SQL's UNIQUE does.
- `max_null_ratio`: missing-or-null records / all records must not exceed the bound; violations = that count.
`examples` are the first 5 offending record indexes (0-based); `ratio` = violations / records.

Score: 100 x the mean over rules of (1 if the rule passed else 1 - ratio), one decimal; a rule that passes counts
fully even when it tolerated some nulls.

A field may be a dotted path (`address.city`) into nested objects; a key that itself contains the dot wins.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

MAX_EXAMPLES = 5


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


def lookup(record: dict[str, Any], path: str) -> Any:
    if path in record:
        return record[path]
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def _absent(value: Any) -> bool:
    return value is MISSING or value is None


def _report(rule: str, fields: Sequence[str], expected: Any, offenders: Iterable[int], total: int,
            passed: bool | None = None) -> dict[str, Any]:
    indexes = list(offenders)
    ratio = round(len(indexes) / total, 4) if total else 0.0
    return {
        "rule": rule, "field": ",".join(fields), "fields": list(fields), "expected": expected,
        "passed": not indexes if passed is None else passed,
        "violations": len(indexes), "examples": indexes[:MAX_EXAMPLES], "ratio": ratio,
    }


def _in_range(value: Any, low: Any, high: Any) -> bool:
    numeric_bounds = isinstance(low if low is not None else high, int | float)
    comparable = (isinstance(value, int | float) and not isinstance(value, bool)) if numeric_bounds \
        else isinstance(value, str)
    if not comparable:
        return False
    return (low is None or value >= low) and (high is None or value <= high)


def _canonical(value: Any) -> str:
    # 3 and 3.0 are the same JSON number; sort_keys makes equal objects equal keys.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def check_records(records: list[dict[str, Any]], rules: Any) -> dict[str, Any]:
    """`rules` is a DataQualityRules (chalicelib/agents/validation.py); returns the report and the score."""
    reports = [*_required(records, rules), *_types(records, rules), *_ranges(records, rules),
               *_unique(records, rules), *_null_ratios(records, rules)]
    score = sum(1.0 if r["passed"] else 1.0 - r["ratio"] for r in reports) / len(reports) if reports else 1.0
    failed = sum(1 for r in reports if not r["passed"])
    return {
        "mode": "data_quality",
        "valid": failed == 0,
        "score": round(100 * score, 1),
        "records": len(records),
        "rules": reports,
        "summary": {"checked": len(reports), "passed": len(reports) - failed, "failed": failed},
    }


def _required(records: list[dict[str, Any]], rules: Any) -> Iterator[dict[str, Any]]:
    for field in rules.required:
        offenders = (i for i, r in enumerate(records) if _absent(lookup(r, field)))
        yield _report("required", [field], None, offenders, len(records))


def _types(records: list[dict[str, Any]], rules: Any) -> Iterator[dict[str, Any]]:
    for field, type_name in rules.types.items():
        check = TYPE_CHECKS[type_name]
        # A missing field has no type; a null is `required`'s and `max_null_ratio`'s business (and passes `null`).
        offenders = (i for i, r in enumerate(records) if not _absent(v := lookup(r, field)) and not check(v))
        yield _report("types", [field], type_name, offenders, len(records))


def _ranges(records: list[dict[str, Any]], rules: Any) -> Iterator[dict[str, Any]]:
    for field, bounds in rules.ranges.items():
        offenders = (i for i, r in enumerate(records)
                     if not _absent(v := lookup(r, field)) and not _in_range(v, bounds.min, bounds.max))
        yield _report("ranges", [field], {"min": bounds.min, "max": bounds.max}, offenders, len(records))


def _unique(records: list[dict[str, Any]], rules: Any) -> Iterator[dict[str, Any]]:
    # Each field's values are serialised once, however many keys name it: the work stays linear in the records.
    columns: dict[str, list[str | None]] = {}
    for key in rules.unique:
        fields = [key] if isinstance(key, str) else list(key)
        for f in fields:
            if f not in columns:
                columns[f] = [None if _absent(v := lookup(r, f)) else _canonical(v) for r in records]
        yield _report("unique", fields, None, _duplicates([columns[f] for f in fields]), len(records))


def _null_ratios(records: list[dict[str, Any]], rules: Any) -> Iterator[dict[str, Any]]:
    for field, bound in rules.max_null_ratio.items():
        nulls = [i for i, r in enumerate(records) if _absent(lookup(r, field))]
        ratio = len(nulls) / len(records) if records else 0.0
        yield _report("max_null_ratio", [field], bound, nulls, len(records), passed=ratio <= bound)


def _duplicates(columns: list[list[str | None]]) -> Iterable[int]:
    seen: set[tuple[str | None, ...]] = set()
    for index, key in enumerate(zip(*columns, strict=True)):
        if None in key:
            continue
        if key in seen:
            yield index
        else:
            seen.add(key)
