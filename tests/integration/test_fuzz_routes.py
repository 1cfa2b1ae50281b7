"""Property: no route answers 5xx to anything a client can send in its body or query string.

For every route in chalicelib/api/spec.py, hypothesis sends bodies shaped like the route's model (its field
names with arbitrary JSON values: control characters, lone surrogates, NaN, huge numbers, deep nesting) or
arbitrary JSON text, and query strings with arbitrary values for the model's parameters. Whatever the status,
it is below 500 and an error is the envelope. Examples are bounded (FUZZ_EXAMPLES per route) to keep the
file well under a minute; `YMERA_FUZZ_EXAMPLES=300` fuzzes harder.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.api.spec import ROUTES
from tests.integration.conftest import Api

FUZZ_EXAMPLES = int(os.environ.get("YMERA_FUZZ_EXAMPLES", "12"))
SESSION_ENDING = {("POST", "/auth/logout"), ("PUT", "/users/{user_id}/password"), ("PUT", "/users/{user_id}")}


@pytest.fixture(autouse=True)
def generous_rate_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The limiter stays in the path (it parses the login body and keys buckets on it), with buckets large
    enough that a 429 does not hide the route behind it. Autouse: set before the `settings` fixture reads."""
    for bucket in ("USER", "IP", "LOGIN_ACCOUNT", "LOGIN_IP"):
        monkeypatch.setenv(f"YMERA_RATE_LIMIT_{bucket}_CAPACITY", "1000000")

#: strings nobody should send: NUL, C0/C1 controls, lone surrogates, extreme dates, fake cursors
bad_text = st.sampled_from(["\u0000", "a\u0000b", "\u0001x", "\ud800", "x\udfff", "\u007f", "\u0085", "\t\n\r",
                     "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "NaN", "-1", "1e999",
                     "00000000-0000-0000-0000-000000000000", "eyJjIjoxLCJpIjoyfQ", "W10", "e30"])
#: and strings a user can type
nasty_text = st.one_of(bad_text, st.text(max_size=40),
                       st.text(alphabet=st.characters(codec=None, categories=None), max_size=20))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**40), max_value=10**40),
                    st.floats(allow_nan=True, allow_infinity=True), nasty_text)
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(nasty_text, inner, max_size=4)), max_leaves=12)


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def bodies(model: Any) -> st.SearchStrategy[str]:
    fields = sorted(model.model_fields) if model is not None else []
    shaped = (st.dictionaries(st.sampled_from(fields), json_values, max_size=len(fields))
              if fields else st.just({}))
    as_json = shaped.map(lambda d: json.dumps(d, allow_nan=True))
    # every field present, each a string nobody should send (what a 500 from user input usually took)
    bad = (st.fixed_dictionaries({f: bad_text for f in fields}).map(json.dumps) if fields else as_json)
    raw = st.one_of(st.sampled_from(["", "null", "[]", "{", '"x"', "1e999", '{"a": NaN}', deep(5000),
                                     '{"x": ' + deep(70) + "}", '{"username": ' + deep(3000) + "}"]),
                    json_values.map(lambda v: json.dumps(v, allow_nan=True)))
    return st.one_of(as_json, bad, raw)


def queries(model: Any) -> st.SearchStrategy[str]:
    if model is None:
        return st.just("")
    params = st.dictionaries(st.sampled_from(sorted(model.model_fields)), nasty_text,
                             max_size=len(model.model_fields))
    return params.map(lambda q: ("?" + urlencode(q, encoding="utf-8", errors="surrogatepass")) if q else "")


def fill(path: str, ids: dict[str, str], garbage: str) -> str:
    return re.sub(r"{(\w+)}", lambda m: ids.get(m.group(1), garbage), path)


def user_id(api: Api) -> str:
    assert api.token is not None
    return str(jwt.decode(api.token, options={"verify_signature": False})["sub"])


def world(api: Api) -> dict[str, str]:
    """A signed-in user with an agent and a task: ids for the path parameters that exist."""
    api.signup()
    agent = api.agent()
    task = api.call("POST", "/tasks", {"agent_id": agent["id"], "title": "t",
                                       "input_data": {"schema": {"type": "object"}, "payload": {}}}).json_body
    return {"user_id": user_id(api), "agent_id": agent["id"], "task_id": task["id"], "name": "swagger-ui.css"}


@pytest.mark.parametrize("method,path", sorted(ROUTES), ids=[f"{m} {p}" for m, p in sorted(ROUTES)])
def test_no_route_answers_5xx_to_any_body_or_query(api: Api, container: Any, method: str, path: str) -> None:
    spec = ROUTES[(method, path)]
    ids = world(api)

    @given(body=bodies(spec.body) if method in {"POST", "PUT"} else st.just(""), query=queries(spec.query),
           real_ids=st.booleans(), garbage=st.sampled_from(["0", "%00", "not-a-uuid", "%F0%9F%98%80"]))
    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(body: str, query: str, real_ids: bool, garbage: str) -> None:
        if (method, path) in SESSION_ENDING:  # they revoke the session they run in: start a fresh one
            api.signup()
            ids["user_id"] = user_id(api)
        url = fill(path, ids if real_ids else {}, garbage) + query
        r = api.call(method, url, raw=body if body else None)
        assert r.status_code < 500, (method, url, body[:300], r.body[:500])
        if r.status_code >= 400:
            error = (r.json_body or {}).get("error")
            assert error and set(error) == {"code", "message", "details", "timestamp"}, (url, r.body[:300])

    check()

