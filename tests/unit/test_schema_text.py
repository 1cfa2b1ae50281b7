"""The shared text and JSON types of chalicelib/schemas/common.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from chalicelib.api.http import json_depth
from chalicelib.schemas.common import NAME_PATTERN, TEXT_PATTERN, JsonObject, Name, Text, _json_problems, _looks_clean

any_text = st.text(alphabet=st.characters(codec=None, categories=None), max_size=12)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), any_text,
              st.sampled_from(["\\u0000", "\\", "\\b", "\\\u0000", "\ud83d\ude00", "\ud800", "\t", "\x0c"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(any_text, inner, max_size=3)),
    max_leaves=10)


@settings(max_examples=400, deadline=None)
@given(value=json_values)
def test_the_fast_check_never_passes_what_the_walk_refuses(value: Any) -> None:
    if _looks_clean(value):
        assert _json_problems(value) == []


class Sample(BaseModel):
    name: Name = "n"
    text: Text = "t"
    data: JsonObject = {}


@pytest.mark.parametrize("field,value,ok", [
    ("name", "plain name", True), ("name", "emoji \U0001F600", True), ("name", "a\tb", False),
    ("name", "\u0085", False), ("name", "\x7f", False), ("text", "a\tb\nc\r\n", True), ("text", "\x7f", True),
    ("text", "\x00", False), ("text", "\x1b[31m", False), ("text", "\udc00", False),
    ("data", {"a": "\\u0000 is fine as text"}, True), ("data", {"a": "\U0001F600"}, True),
    ("data", {"a": [float("inf")]}, False), ("data", {"a": {"\x00": 1}}, False),
])
def test_names_text_and_json(field: str, value: Any, ok: bool) -> None:
    if ok:
        Sample.model_validate({field: value})
    else:
        with pytest.raises(ValidationError):
            Sample.model_validate({field: value})


def test_the_json_schema_states_the_same_rule_as_a_pattern() -> None:
    props = Sample.model_json_schema()["properties"]
    assert props["name"]["pattern"] == NAME_PATTERN and props["text"]["pattern"] == TEXT_PATTERN


def test_json_depth() -> None:
    assert [json_depth(json.loads(x)) for x in ["1", "[]", '{"a": [1, {"b": []}]}']] == [0, 1, 4]
    assert json_depth(json.loads("[" * 500 + "]" * 500)) == 65  # stops one past the limit
