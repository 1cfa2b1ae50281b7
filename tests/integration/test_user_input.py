"""Issue 7 §4: nothing a user types gets a 500 — every bad input is a 4xx in the error envelope.

Each case below answered 500 (or Chalice's raw, non-envelope body) before the fix.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote

import pytest

from tests.integration.conftest import Api
from tests.integration.test_api_auth import assert_envelope


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def locs(response: Any) -> list[str]:
    return [".".join(e["loc"]) for e in response.json_body["error"]["details"]["errors"]]


# --- deeply nested JSON -----------------------------------------------------------------------------------------


def test_deeply_nested_login_body_is_a_400_in_the_envelope(api: Api) -> None:
    # GIVEN nesting deeper than Python's recursion limit (the login rate limiter parses the body first)
    r = api.call("POST", "/auth/login", raw='{"username": ' + deep(100_000) + "}")
    assert_envelope(r, 400, "BAD_REQUEST")


def test_nesting_beyond_the_depth_limit_is_refused_before_validation(api: Api) -> None:
    api.signup()
    r = api.call("POST", "/agents", raw=json.dumps({"name": "a", "type": "validation"})[:-1]
                 + ', "metadata": {"x": ' + deep(200) + "}}")
    error = assert_envelope(r, 400, "BAD_REQUEST")
    assert error["details"]["max_depth"] == 64


def test_nesting_within_the_limit_is_accepted(api: Api) -> None:
    api.signup()
    r = api.call("POST", "/agents", {"name": "a", "type": "validation", "metadata": {"x": json.loads(deep(30))}})
    assert r.status_code == 201, r.json_body


# --- text Postgres cannot store, control characters, non-finite numbers ---------------------------------------


@pytest.mark.parametrize("name", ["bad\u0000name", "\u0001x", "tab\there", "line\nbreak", "del\u007f", "\ud800"])
def test_agent_names_refuse_control_characters_and_lone_surrogates(api: Api, name: str) -> None:
    api.signup()
    r = api.call("POST", "/agents", raw=json.dumps({"name": name, "type": "validation"}))
    assert_envelope(r, 422, "VALIDATION_ERROR")
    assert locs(r) == ["name"]


@pytest.mark.parametrize("field,value", [("title", "a\u0000b"), ("title", "a\nb"), ("description", "x\u0000"),
                                         ("description", "bell\u0007")])
def test_task_text_refuses_nul_and_c0_controls(api: Api, field: str, value: str) -> None:
    api.signup()
    agent = api.agent()
    body = {"agent_id": agent["id"], "title": "t", field: value}
    r = api.call("POST", "/tasks", body)
    assert_envelope(r, 422, "VALIDATION_ERROR")
    assert locs(r) == [field]


def test_free_text_keeps_tabs_and_newlines(api: Api) -> None:
    api.signup()
    agent = api.agent()
    r = api.call("POST", "/tasks", {"agent_id": agent["id"], "title": "t", "description": "one\ttwo\r\nthree",
                                    "input_data": {"schema": {"type": "object"}, "payload": {"a": "x\ny"}}})
    assert r.status_code == 202, r.json_body


@pytest.mark.parametrize("metadata,where", [
    ('{"k": "v\\u0000"}', "metadata.k"),
    ('{"k\\u0000": 1}', "metadata"),
    ('{"a": [1, {"b": NaN}]}', "metadata.a.1.b"),
    ('{"a": Infinity}', "metadata.a"),
    ('{"a": -1e999}', "metadata.a"),
    ('{"a": "\\ud83d"}', "metadata.a"),
])
def test_json_fields_refuse_nul_surrogates_and_non_finite_numbers(api: Api, metadata: str, where: str) -> None:
    api.signup()
    r = api.call("POST", "/agents", raw='{"name": "a", "type": "validation", "metadata": ' + metadata + "}")
    error = assert_envelope(r, 422, "VALIDATION_ERROR")
    assert locs(r) == [where], error


def test_task_input_data_with_nul_is_422_not_500(api: Api) -> None:
    api.signup()
    agent = api.agent()
    r = api.call("POST", "/tasks", raw=json.dumps({"agent_id": agent["id"], "title": "t",
                                                   "input_data": {"payload": {"x": "\u0000"}}}))
    assert_envelope(r, 422, "VALIDATION_ERROR")
    assert locs(r) == ["input_data.payload.x"]


def test_username_with_nul_is_refused_at_register_and_login(api: Api) -> None:
    r = api.call("POST", "/auth/register", {"username": "bob\u0000", "email": "b@example.com",
                                            "password": "correct horse"})
    assert_envelope(r, 422, "VALIDATION_ERROR")
    r = api.call("POST", "/auth/login", {"username": "bob\u0000", "password": "correct horse"})
    assert_envelope(r, 422, "VALIDATION_ERROR")


def test_query_strings_with_nul_are_422(api: Api) -> None:
    api.signup()
    r = api.call("GET", "/audit-logs?event_type=" + quote("a\u0000b"))
    assert_envelope(r, 422, "VALIDATION_ERROR")
    assert locs(r) == ["query.event_type"]


# --- cursors and datetimes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [{"c": "2024-01-01T00:00:00+00:00", "i": 5},
                                     {"c": 5, "i": "00000000-0000-0000-0000-000000000000"},
                                     ["not", "an", "object"], {"c": "2024-01-01T00:00:00+00:00", "i": None}])
def test_a_cursor_with_wrongly_typed_parts_is_422(api: Api, payload: Any) -> None:
    api.signup()
    cursor = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    for path in ("/tasks", "/agents"):
        r = api.call("GET", f"{path}?cursor={cursor}")
        assert_envelope(r, 422, "VALIDATION_ERROR")


@pytest.mark.parametrize("path,param", [("/tasks", "created_after"), ("/tasks", "created_before"),
                                        ("/audit-logs", "after"), ("/audit-logs", "before")])
@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
def test_extreme_datetimes_in_filters_are_422(api: Api, path: str, param: str, value: str) -> None:
    api.signup()
    r = api.call("GET", f"{path}?{param}={quote(value)}")
    assert_envelope(r, 422, "VALIDATION_ERROR")
    assert locs(r) == [f"query.{param}"]


def test_ordinary_datetimes_in_filters_still_work(api: Api) -> None:
    api.signup()
    r = api.call("GET", "/tasks?created_after=" + quote("2024-01-01T00:00:00+14:00"))
    assert r.status_code == 200, r.json_body


# --- Chalice's own answers --------------------------------------------------------------------------------------


def test_method_not_allowed_is_an_envelope_with_allow(api: Api) -> None:
    r = api.call("PATCH", "/agents")
    error = assert_envelope(r, 405, "METHOD_NOT_ALLOWED")
    assert "GET" in r.headers["Allow"] and error["details"]["allowed"]


def test_unsupported_media_type_is_an_envelope(api: Api) -> None:
    r = api.call("POST", "/auth/login", raw="username=x", headers={"Content-Type": "text/plain"})
    assert_envelope(r, 415, "UNSUPPORTED_MEDIA_TYPE")


@pytest.mark.parametrize("payload", [{"c": "0001-01-01T00:00:00+14:00", "i": "00000000-0000-0000-0000-000000000000"},
                                     {"c": "2024-01-01T00:00:00+00:00", "i": "not-a-uuid"}])
def test_a_cursor_with_bad_values_is_422(api: Api, payload: Any) -> None:
    api.signup()
    cursor = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    assert_envelope(api.call("GET", f"/tasks?cursor={cursor}"), 422, "VALIDATION_ERROR")


def test_login_with_a_lone_surrogate_username_or_password_is_422_not_500(api: Api) -> None:
    # The login rate limiter keys a bucket on the username before the view validates it.
    for body in ('{"username": "\\ud800", "password": "x"}', '{"username": "bob", "password": "\\udfff"}'):
        r = api.call("POST", "/auth/login", raw=body)
        assert_envelope(r, 422, "VALIDATION_ERROR")
