"""The validation agent's checked-validator cache (chalicelib.agents.validation.SchemaCache)."""

from __future__ import annotations

import pytest

from chalicelib.agents.validation import SchemaCache, ValidationAgent, ValidationInput
from chalicelib.errors import AgentInputError

SCHEMA = {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}


def test_the_same_schema_is_checked_once_and_its_validator_reused() -> None:
    cache = SchemaCache()
    first = cache.validator(SCHEMA)
    assert cache.validator({"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}) is first
    assert (cache.hits, cache.misses) == (1, 1)


def test_the_cached_validator_does_not_share_the_callers_dict() -> None:
    cache = SchemaCache()
    schema = {"type": "object", "required": ["id"]}
    validator = cache.validator(schema)
    schema["required"] = ["other"]  # a caller changing its input afterwards changes nothing cached
    assert [e.message for e in validator.iter_errors({})] == ["'id' is a required property"]
    assert cache.validator(schema) is not validator


def test_key_order_is_part_of_the_key() -> None:
    # jsonschema applies keywords in the schema's order: the first MAX_ERRORS violations may differ.
    cache = SchemaCache()
    a = cache.validator({"type": "array", "maxItems": 1})
    assert cache.validator({"maxItems": 1, "type": "array"}) is not a
    assert cache.misses == 2


def test_an_invalid_schema_is_refused_every_time_and_never_cached() -> None:
    cache = SchemaCache()
    for _ in range(2):
        with pytest.raises(AgentInputError, match="not a valid"):
            cache.validator({"type": 12})
    assert (cache.hits, cache.misses) == (0, 0)


def test_the_cache_is_bounded_least_recently_used_first() -> None:
    cache = SchemaCache(maxsize=2)
    one, two, three = ({"type": "object", "maxProperties": n} for n in (1, 2, 3))
    kept = cache.validator(one)
    cache.validator(two)
    assert cache.validator(one) is kept  # one is now the most recently used
    cache.validator(three)  # evicts two
    assert cache.validator(one) is kept
    misses = cache.misses
    cache.validator(two)
    assert cache.misses == misses + 1


def test_size_zero_builds_a_validator_per_call() -> None:
    cache = SchemaCache(maxsize=0)
    assert cache.validator(SCHEMA) is not cache.validator(SCHEMA)
    assert (cache.hits, cache.misses) == (0, 0)


def test_the_agent_answers_the_same_with_a_warm_cache() -> None:
    agent = ValidationAgent()
    data = ValidationInput.model_validate({"schema": SCHEMA, "payload": {"id": 3}})
    first, second = agent.run(data, {}), agent.run(data, {})
    assert first.output == second.output and first.output["error_count"] == 1


def test_a_schema_that_passed_its_walks_still_has_its_payload_checked() -> None:
    from chalicelib.agents.schema_limits import MAX_DEPTH, SchemaLimitError, check_schema_input

    schema = {"type": "array", "items": {"pattern": "^a+$"}}
    check_schema_input(schema, [])
    deep: list = []
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(SchemaLimitError, match="payload is nested deeper"):
        check_schema_input(schema, deep)


def test_a_schema_refused_by_its_walks_is_refused_every_time() -> None:
    from chalicelib.agents.schema_limits import SchemaLimitError, check_schema_input

    schema = {"type": "string", "pattern": "(a)\\1"}  # a backreference: RE2 cannot run it
    for _ in range(2):
        with pytest.raises(SchemaLimitError):
            check_schema_input(schema, "aa")
