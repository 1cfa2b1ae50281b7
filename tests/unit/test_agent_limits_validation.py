"""The validation agent's work is bounded by its input (issue 7 §2): each case took seconds to minutes before.

Measured before the fix on one core: `^(a+)+$` on 26 characters 15 s, a 1.3 KB `$ref`/`allOf` chain 167 s
(64 MB of errors), `uniqueItems` over 5,000 objects 148 s. Each test here asserts well under a second.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from chalicelib.agents.registry import get_agent, validate_input
from chalicelib.agents.schema_limits import MAX_ERRORS, MAX_EXPANDED_SUBSCHEMAS, canonical
from chalicelib.agents.validation import ValidationInput
from chalicelib.errors import AgentInputError, ValidationError


def run(schema: Any, payload: Any, config: dict[str, Any] | None = None) -> dict[str, Any]:
    data = ValidationInput.model_validate({"schema": schema, "payload": payload})
    return get_agent("validation").run(data, config or {}, None).output


#: the bounds below are ~1 s of work; the old code took 15-167 s on the same inputs. The slack keeps a
#: loaded 2-core CI machine from failing a bounded run, without letting a blow-up pass.
SLACK = 3.0


def timed(fn: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def ref_chain(levels: int) -> dict[str, Any]:
    """Each level is an allOf of two $refs to the next: 2**levels subschemas once expanded, ~40 bytes a level."""
    defs: dict[str, Any] = {f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]}
                            for i in range(levels)}
    defs[f"d{levels}"] = {"type": "integer"}
    return {"$defs": defs, "$ref": "#/$defs/d0"}


def test_catastrophic_pattern_runs_in_linear_time() -> None:
    # Python's re needs ~2**n steps for `^(a+)+$` against n a's and a mismatch (26 chars: 15 s).
    output, seconds = timed(lambda: run({"type": "string", "pattern": "^(a+)+$"}, "a" * 5000 + "!"))
    assert output["valid"] is False and output["errors"][0]["validator"] == "pattern"
    assert seconds < SLACK


def test_catastrophic_pattern_properties_key_runs_in_linear_time() -> None:
    schema = {"type": "object", "patternProperties": {"^(a+)+$": {"type": "integer"}}, "additionalProperties": False}
    output, seconds = timed(lambda: run(schema, {"a" * 40 + "!": 1, "aaa": "x"}))
    assert {e["validator"] for e in output["errors"]} == {"type", "additionalProperties"}
    assert seconds < SLACK


def test_format_regex_in_the_payload_is_checked_by_re2() -> None:
    output = run({"format": "regex"}, "(?=lookahead)")
    assert output["valid"] is False and output["errors"][0]["validator"] == "format"


@pytest.mark.parametrize("pattern", ["(a)\\1", "(?=x)y", "(?<!x)y"])
def test_pattern_re2_cannot_run_is_a_422_at_post_tasks(pattern: str) -> None:
    with pytest.raises(ValidationError) as raised:
        validate_input("validation", {"schema": {"pattern": pattern}, "payload": "x"})
    message = raised.value.details["errors"][0]["msg"]
    assert "RE2" in message and "/pattern" in message


def test_ref_chain_that_expands_exponentially_is_refused_at_post_tasks() -> None:
    schema = ref_chain(20)  # 1.3 KB; 2**20 subschemas once expanded
    assert len(json.dumps(schema, separators=(",", ":"))) < 1400
    started = time.perf_counter()
    with pytest.raises(ValidationError) as raised:
        validate_input("validation", {"schema": schema, "payload": "x"})
    assert time.perf_counter() - started < SLACK
    assert f"more than {MAX_EXPANDED_SUBSCHEMAS} subschemas" in raised.value.details["errors"][0]["msg"]


def test_a_short_ref_chain_still_validates() -> None:
    output = run(ref_chain(3), "x")
    assert output["valid"] is False and output["error_count"] == 8


def test_recursive_ref_blowup_stops_at_the_step_budget() -> None:
    # A recursive $ref is not sized statically (its depth follows the payload): the step budget stops it.
    schema = {"$defs": {"t": {"anyOf": [{"type": "array", "items": {"$ref": "#/$defs/t"}},
                                        {"type": "array", "items": {"$ref": "#/$defs/t"}}]}}, "$ref": "#/$defs/t"}
    payload: Any = "leaf"
    for _ in range(40):
        payload = [payload]
    started = time.perf_counter()
    with pytest.raises(AgentInputError) as raised:
        run(schema, payload, {"max_steps": 5000})
    assert raised.value.details["reason"] == "step budget exceeded"
    assert time.perf_counter() - started < SLACK


def test_unique_items_over_thousands_of_objects_is_linear() -> None:
    items = [{"id": i, "tags": ["a", "b"], "n": float(i)} for i in range(10_000)]
    output, seconds = timed(lambda: run({"uniqueItems": True}, items))
    assert output["valid"] is True and seconds < SLACK
    output = run({"uniqueItems": True}, [*items[:100], {"n": 5, "tags": ["a", "b"], "id": 5.0}])
    assert output["valid"] is False


def test_unique_items_keeps_json_equality() -> None:
    assert canonical({"a": 1, "b": [1.0]}) == canonical({"b": [1], "a": 1.0})
    assert canonical(True) != canonical(1) and canonical([True]) != canonical([1])
    assert run({"uniqueItems": True}, [1, True, 0, False, None])["valid"] is True


def test_errors_are_capped_and_say_so() -> None:
    output = run({"type": "array", "items": {"type": "string"}}, list(range(MAX_ERRORS * 3)))
    assert output["error_count"] == MAX_ERRORS and output["errors_truncated"] is True
    assert [e["path"] for e in output["errors"][:3]] == ["/0", "/1", "/2"]


def test_error_messages_are_capped() -> None:
    output = run({"type": "string"}, ["x" * 10_000])
    assert len(output["errors"][0]["message"]) <= 503


@pytest.mark.parametrize("field", ["schema", "payload"])
def test_deep_or_large_documents_are_refused_at_post_tasks(field: str) -> None:
    deep: Any = {}
    for _ in range(100):
        deep = {"a": deep}
    body = {"schema": {}, "payload": None, field: deep}
    with pytest.raises(ValidationError) as raised:
        validate_input("validation", body)
    assert "nested deeper" in raised.value.details["errors"][0]["msg"]


def test_limits_are_shown_in_the_input_schema() -> None:
    from chalicelib.agents.registry import describe

    text = str(describe("validation")["input_schema"])
    assert "x-max-bytes" in text and "RE2" in text


# --- data quality: the work is records x fields read per record (97 KB of records x rules took 51 s) ------


def test_rules_reading_too_many_fields_per_record_are_a_422() -> None:
    body = {"records": [{"id": i} for i in range(4000)], "rules": {"required": [f"f{i}" for i in range(2000)]}}
    with pytest.raises(ValidationError) as raised:
        validate_input("validation", body)
    assert "at most 200 are accepted" in raised.value.details["errors"][0]["msg"]


def test_records_times_fields_over_the_cap_is_a_422() -> None:
    body = {"records": [{"id": i} for i in range(20_000)], "rules": {"required": [f"f{i}" for i in range(150)]}}
    with pytest.raises(ValidationError) as raised:
        validate_input("validation", body)
    assert "field reads" in raised.value.details["errors"][0]["msg"]


def test_unique_keys_sharing_a_large_field_serialise_it_once() -> None:
    records = [{"id": i, "doc": {"tags": list(range(50))}} for i in range(3000)]
    data = ValidationInput.model_validate({"records": records, "rules": {"unique": [["doc", "id"]] * 60}})
    started = time.perf_counter()
    report = get_agent("validation").run(data, {}, None).output
    assert report["valid"] is True and time.perf_counter() - started < SLACK
