"""Schemathesis against GET /openapi.json, over HTTP to the app served by chalice's local gateway.

Every documented operation gets generated requests (valid and invalid ones) with a signed-in user's
token; the answers must never be a 5xx and must match the documented response schema for their status.
The example count per operation is bounded (SCHEMATHESIS_EXAMPLES) so the whole file runs in well under
a minute; raise it locally to fuzz harder: `YMERA_FUZZ_EXAMPLES=200 pytest tests/integration/test_schemathesis.py`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

SCHEMATHESIS_EXAMPLES = int(os.environ.get("YMERA_FUZZ_EXAMPLES", "6"))


@pytest.fixture(autouse=True)
def generous_rate_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The limiter stays in the path (it parses the login body and keys buckets on it), with buckets large
    enough that a 429 does not hide the route behind it. Autouse: set before the `settings` fixture reads."""
    for bucket in ("USER", "IP", "LOGIN_ACCOUNT", "LOGIN_IP"):
        monkeypatch.setenv(f"YMERA_RATE_LIMIT_{bucket}_CAPACITY", "1000000")


@pytest.fixture(scope="session")
def live_server() -> Iterator[str]:
    """One server per session: chalice's local server rebinds the app object's class (once only).
    Views find the current test's container through `get_container()`, so any test may use it."""
    from app import app
    from infra.local.server import ApiServer

    server = ApiServer(app, "127.0.0.1", 0).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def live_url(live_server: str, container: Any) -> str:
    return live_server


@dataclass
class World:
    """A signed-in user with one agent of each mode and a task, so generated ids sometimes exist."""

    url: str
    username: str
    password: str
    ids: dict[str, str]
    agent_key: str

    def login(self) -> str:
        r = requests.post(f"{self.url}/auth/login", json={"username": self.username, "password": self.password},
                          timeout=10)
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])


@pytest.fixture
def world(live_url: str) -> World:
    name, password = f"fuzz{uuid.uuid4().hex[:8]}", "correct horse battery"
    r = requests.post(f"{live_url}/auth/register", json={"username": name, "email": f"{name}@example.com",
                                                          "password": password}, timeout=10)
    assert r.status_code == 201, r.text
    w = World(live_url, name, password, {"user_id": r.json()["id"]}, "")
    auth = {"Authorization": f"Bearer {w.login()}"}
    managed = requests.post(f"{live_url}/agents", json={"name": "m", "type": "validation"}, headers=auth,
                            timeout=10).json()
    external = requests.post(f"{live_url}/agents", json={"name": "x", "type": "validation", "mode": "external"},
                             headers=auth, timeout=10).json()
    body = {"agent_id": managed["id"], "title": "t", "input_data": {"schema": {"type": "object"}, "payload": {}}}
    task = requests.post(f"{live_url}/tasks", json=body, headers=auth, timeout=10).json()
    w.ids.update(agent_id=managed["id"], task_id=task["id"], external_agent_id=external["id"])
    w.agent_key = external["api_key"]
    return w


#: routes that end the session they are called with: each of their cases signs in afresh
SESSION_ENDING = {"POST /auth/logout", "PUT /users/{user_id}/password", "PUT /users/{user_id}"}


def prepare(case: Any, world: World, mode: GenerationMode, draw: int) -> None:
    """Point half the valid cases at ids that exist, and keep long polls short."""
    if mode is GenerationMode.POSITIVE and draw % 2 == 0:
        for name in list(case.path_parameters or {}):
            key = "external_agent_id" if "lease" in case.path or "heartbeat" in case.path else name
            if key in world.ids:
                case.path_parameters[name] = world.ids[key]
        if case.headers and "X-Agent-Id" in case.headers:
            case.headers["X-Agent-Id"] = world.ids["external_agent_id"]
    if isinstance(case.body, dict) and isinstance(case.body.get("wait_seconds"), int | float):
        case.body["wait_seconds"] = 0
    wait = case.query.get("wait") if isinstance(case.query, dict) else None
    if isinstance(wait, int | float) and not isinstance(wait, bool) and 0 < wait <= 20:
        case.query["wait"] = 0.01  # GET /tasks/{id}?wait=, GET /runs/{id}?wait=: still a long-poll, briefly


def operations(live_url: str) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{live_url}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def fuzz(operation: Any, mode: GenerationMode, world: World, examples: int) -> None:
    """`examples` generated requests against one operation; schemathesis raises on the first failure."""
    token = world.login()
    drawn = iter(range(1_000_000))

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    def run(case: Any) -> None:
        prepare(case, world, mode, next(drawn))
        bearer = world.login() if f"{operation.method.upper()} {operation.path}" in SESSION_ENDING else token
        case.call_and_validate(headers={"Authorization": f"Bearer {bearer}", "X-Agent-Key": world.agent_key},
                               checks=[not_a_server_error, response_schema_conformance])

    try:
        run()
    except Unsatisfiable:  # negative mode on an operation with nothing to get wrong (no body, query or path)
        assert mode is GenerationMode.NEGATIVE, operation.label


def test_no_server_error_and_every_answer_matches_the_spec(live_url: str, world: World, container: Any) -> None:
    ops = operations(live_url)
    assert len(ops) >= 30
    for operation in ops:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(operation, mode, world, SCHEMATHESIS_EXAMPLES)


# --- answers the app never sees: the unknown route -------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer x"}])
def test_an_unknown_route_is_a_404_in_the_envelope(live_url: str, headers: dict[str, str]) -> None:
    r = requests.get(f"{live_url}/no/such/route", headers=headers, timeout=10)
    assert r.status_code == 404 and r.headers["Content-Type"] == "application/json"
    error = r.json()["error"]
    assert error["code"] == "NOT_FOUND" and set(error) == {"code", "message", "details", "timestamp"}


def test_405_and_415_over_http_are_envelopes(live_url: str) -> None:
    r = requests.patch(f"{live_url}/agents", timeout=10)
    assert r.status_code == 405 and r.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    r = requests.post(f"{live_url}/auth/login", data="x", headers={"Content-Type": "text/plain"}, timeout=10)
    assert r.status_code == 415 and r.json()["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
