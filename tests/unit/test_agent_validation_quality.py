"""The `validation` agent's data-quality mode: per-rule reports with exact counts, and the score."""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest

from chalicelib.agents.base import AgentOutput
from chalicelib.agents.registry import get_agent, validate_input
from chalicelib.agents.validation import DATA_QUALITY_EXAMPLE, DataQualityCheck, JsonSchemaCheck, ValidationInput
from chalicelib.errors import ValidationError

CUSTOMERS: list[dict[str, Any]] = [
    {"id": 1, "email": "ana@example.com", "age": 34, "country": "PT", "address": {"city": "Porto"}},
    {"id": 2, "email": None, "age": 212, "country": "PT", "address": {"city": "Lisbon"}},
    {"id": 3, "email": "li@example.com", "age": "41", "country": "CN", "address": {}},
    {"id": 2, "email": "bo@example.com", "age": None, "country": "SE", "address": {"city": "Malmö"}},
    {"id": 5, "age": 29.0, "country": "PT", "address": {"city": "Porto"}},
    {"id": 6, "email": "ana@example.com", "age": True, "country": "PT", "address": {"city": "Porto"}},
]


def check(records: list[dict[str, Any]], **rules: Any) -> AgentOutput:
    agent = get_agent("validation")
    return agent.run(ValidationInput.model_validate({"records": records, "rules": rules}), {})


def brief(output: dict[str, Any]) -> list[tuple[str, str, bool, int, list[int], float]]:
    return [(r["rule"], r["field"], r["passed"], r["violations"], r["examples"], r["ratio"]) for r in output["rules"]]


def test_every_rule_kind_with_exact_counts_and_examples() -> None:
    result = check(
        CUSTOMERS,
        required=["id", "email"],
        types={"age": "integer", "email": "string"},
        ranges={"age": {"min": 0, "max": 130}},
        unique=["id", ["email", "country"]],
        max_null_ratio={"email": 0.1, "age": 0.2},
    )

    assert brief(result.output) == [
        # email missing in record 4, null in record 1.
        ("required", "id", True, 0, [], 0.0),
        ("required", "email", False, 2, [1, 4], 0.3333),
        # "41" is a string and True is a boolean, not an integer; 29.0 is an integer as JSON Schema counts it;
        # the null age (3) is max_null_ratio's concern, not the type rule's.
        ("types", "age", False, 2, [2, 5], 0.3333),
        ("types", "email", True, 0, [], 0.0),
        # 212 is out of range; "41" and True are not numbers, so they cannot be in range.
        ("ranges", "age", False, 3, [1, 2, 5], 0.5),
        # the second id 2 (record 3) repeats record 1; ana@example.com/PT repeats in record 5.
        ("unique", "id", False, 1, [3], 0.1667),
        ("unique", "email,country", False, 1, [5], 0.1667),
        # 2 of 6 emails are missing or null (0.33 > 0.1); 1 of 6 ages is null (0.17 <= 0.2).
        ("max_null_ratio", "email", False, 2, [1, 4], 0.3333),
        ("max_null_ratio", "age", True, 1, [3], 0.1667),
    ]
    output = result.output
    assert output["valid"] is False and output["records"] == 6
    assert output["summary"] == {"checked": 9, "passed": 3, "failed": 6}
    # mean of 1, .6667, .6667, 1, .5, .8333, .8333, .6667, 1 (passing rules count fully).
    assert output["score"] == 79.6
    assert output["rules"][4]["expected"] == {"min": 0, "max": 130}
    assert output["rules"][6]["fields"] == ["email", "country"]
    assert result.metrics["violations"] == 12 and result.metrics["records"] == 6 and result.metrics["rules"] == 9


def test_clean_records_score_100() -> None:
    output = check([{"sku": "A-1", "qty": 1}, {"sku": "A-2", "qty": 5}], required=["sku"], unique=["sku"],
                   ranges={"qty": {"min": 1}}).output

    assert output["valid"] is True and output["score"] == 100.0
    assert all(r["passed"] and r["examples"] == [] for r in output["rules"])


def test_examples_stop_at_five_but_counts_do_not() -> None:
    records = [{"n": None} for _ in range(8)]

    (report,) = check(records, required=["n"]).output["rules"]

    assert report["violations"] == 8 and report["examples"] == [0, 1, 2, 3, 4] and report["ratio"] == 1.0


def test_dotted_paths_reach_into_objects_and_null_type_counts_nulls() -> None:
    output = check(CUSTOMERS, required=["address.city"], types={"email": "null"}).output

    assert brief(output) == [
        ("required", "address.city", False, 1, [2], 0.1667),
        # record 1's email is null and record 4 has none (no value, no type): the other four are strings.
        ("types", "email", False, 4, [0, 2, 3, 5], 0.6667),
    ]


def test_string_ranges_compare_iso_dates() -> None:
    records = [{"day": "2024-01-31"}, {"day": "2023-12-31"}, {"day": 20240101}]

    (report,) = check(records, ranges={"day": {"min": "2024-01-01", "max": "2024-12-31"}}).output["rules"]

    assert (report["violations"], report["examples"]) == (2, [1, 2])


def test_unique_treats_3_and_3_point_0_as_the_same_number_and_skips_missing_keys() -> None:
    records = [{"k": 3}, {"k": 3.0}, {}, {}, {"k": {"a": 1, "b": 2}}, {"k": {"b": 2, "a": 1}}]

    (report,) = check(records, unique=["k"]).output["rules"]

    assert (report["violations"], report["examples"]) == (2, [1, 5])


def test_json_schema_mode_still_works_unchanged() -> None:
    agent = get_agent("validation")
    data = ValidationInput.model_validate({"schema": {"type": "integer"}, "payload": "x"})

    assert isinstance(data.root, JsonSchemaCheck)
    assert agent.run(data, {}).output["valid"] is False


def test_data_quality_example_in_the_schema_is_valid() -> None:
    schema = get_agent("validation").Input.model_json_schema(by_alias=True)

    assert schema["type"] == "object" and len(schema["oneOf"]) == 2
    assert schema["$defs"]["DataQualityCheck"]["examples"] == [DATA_QUALITY_EXAMPLE]
    assert isinstance(ValidationInput.model_validate(DATA_QUALITY_EXAMPLE).root, DataQualityCheck)
    output = check(DATA_QUALITY_EXAMPLE["records"], **DATA_QUALITY_EXAMPLE["rules"]).output
    assert json.loads(json.dumps(output)) == output


@pytest.mark.parametrize(
    ("input_data", "loc", "error_type"),
    [
        ({"records": [], "rules": {"required": ["a"]}}, ("records",), "too_short"),
        ({"records": [{}], "rules": {}}, ("rules",), "value_error"),
        ({"records": [{}]}, ("rules",), "missing"),
        ({"records": [1], "rules": {"required": ["a"]}}, ("records", 0), "dict_type"),
        ({"records": [{}], "rules": {"types": {"a": "int"}}}, ("rules", "types", "a"), "literal_error"),
        ({"records": [{}], "rules": {"ranges": {"a": {"min": 5, "max": 1}}}}, ("rules", "ranges", "a"), "value_error"),
        ({"records": [{}], "rules": {"ranges": {"a": {}}}}, ("rules", "ranges", "a"), "value_error"),
        ({"records": [{}], "rules": {"ranges": {"a": {"min": 1, "max": "z"}}}}, ("rules", "ranges", "a"),
         "value_error"),
        ({"records": [{}], "rules": {"unique": [[]]}}, ("rules", "unique", 0, "fields"), "too_short"),
        ({"records": [{}], "rules": {"max_null_ratio": {"a": 1.5}}}, ("rules", "max_null_ratio", "a"),
         "less_than_equal"),
        ({"records": [{}], "rules": {"required": ["a"], "strict": True}}, ("rules", "strict"), "extra_forbidden"),
        # the two shapes do not mix: with records, schema/payload are unknown keys.
        ({"records": [{}], "rules": {"required": ["a"]}, "schema": {}}, ("schema",), "extra_forbidden"),
    ],
)
def test_input_model_rejects_bad_records_input(input_data: dict[str, Any], loc: tuple[Any, ...],
                                               error_type: str) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        ValidationInput.model_validate(input_data)

    assert [(err["loc"], err["type"]) for err in caught.value.errors()] == [(loc, error_type)]


def test_validate_input_keeps_the_records_shape_readable_by_the_worker() -> None:
    normalised = validate_input("validation", {"records": [{"a": 1}], "rules": {"unique": [["a", "b"]]}})

    assert normalised == {"records": [{"a": 1}], "rules": {"required": [], "types": {}, "ranges": {},
                                                           "unique": [["a", "b"]], "max_null_ratio": {}}}
    assert isinstance(ValidationInput.model_validate(normalised).root, DataQualityCheck)
    with pytest.raises(ValidationError) as caught:
        validate_input("validation", {"records": "not a list", "rules": {"required": ["a"]}})
    assert caught.value.details["errors"][0]["loc"] == ["input_data", "records"]
