"""GET /engines and POST /engines/{name}: every registered engine answers its own example over HTTP (written over
registry.names(), so every engine anyone registers is covered), inputs are checked (422), names are (404)."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

from chalicelib.engines import registry
from tests.integration.conftest import Api


def test_get_engines_describes_every_registered_engine(api: Api) -> None:
    api.signup()
    r = api.call("GET", "/engines")
    assert r.status_code == 200, r.json_body
    described = {e["name"]: e for e in r.json_body["items"]}
    assert sorted(described) == registry.names()
    assert {"analytics", "performance"} <= set(described)
    for e in described.values():
        Draft202012Validator.check_schema(e["input_schema"])
        Draft202012Validator.check_schema(e["output_schema"])
        assert e["description"]
        assert not list(Draft202012Validator(e["input_schema"]).iter_errors(e["example"])), e["name"]


def test_every_engine_answers_its_own_example(api: Api) -> None:
    api.signup()
    engines: list[dict[str, Any]] = api.call("GET", "/engines").json_body["items"]
    for e in engines:
        r = api.call("POST", f"/engines/{e['name']}", e["example"])
        assert r.status_code == 200, (e["name"], r.json_body)
        errors = [x.message for x in Draft202012Validator(e["output_schema"]).iter_errors(r.json_body)]
        assert not errors, (e["name"], errors)


def test_an_invalid_input_is_422_in_the_envelope_listing_the_violation(api: Api) -> None:
    api.signup()
    r = api.call("POST", "/engines/analytics", {"bucket": "week", "colour": "red"})
    assert r.status_code == 422
    error = r.json_body["error"]
    assert error["code"] == "ENGINE_INPUT_INVALID"
    assert len(error["details"]["errors"]) == 2
    r = api.call("POST", "/engines/analytics", {"from": "2026-01-01T00:00:00Z", "to": "2026-12-01T00:00:00Z",
                                                "bucket": "hour"})
    assert r.status_code == 422 and r.json_body["error"]["details"]["max_buckets"] == 2000
    r = api.call("POST", "/engines/analytics", {"from": "not a time"})
    assert r.status_code == 422 and r.json_body["error"]["details"] == {"field": "from"}
    assert api.call("POST", "/engines/analytics", raw="[1]").status_code == 400


def test_an_unknown_engine_is_404_and_both_routes_need_a_token(api: Api) -> None:
    api.signup()
    r = api.call("POST", "/engines/nope", {})
    assert r.status_code == 404
    assert r.json_body["error"]["code"] == "ENGINE_NOT_FOUND"
    assert "analytics" in r.json_body["error"]["details"]["available"]
    anonymous = Api(api.client)
    assert anonymous.call("GET", "/engines").status_code == 401
    assert anonymous.call("POST", "/engines/analytics", {}).status_code == 401


def test_an_empty_body_runs_with_the_defaults(api: Api) -> None:
    api.signup()
    r = api.call("POST", "/engines/analytics")
    assert r.status_code == 200, r.json_body
    assert r.json_body["scope"] == "own" and r.json_body["range"]["bucket"] == "day"
    assert len(r.json_body["series"]) in (7, 8)  # the last 7 days, truncated to whole days
