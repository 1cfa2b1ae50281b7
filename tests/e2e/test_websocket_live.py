"""End to end: real WebSocket clients against `make run` (python -m infra.local) with this machine's Postgres
and Redis: the local gateway, the Chalice WebSocket handlers, the triggers' events and the looping notifier."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.e2e.test_local_runtime import Runtime, wait_for_terminal

pytestmark = pytest.mark.e2e
TERMINAL = {"completed", "failed", "cancelled", "timed_out"}


@pytest.fixture(scope="module")
def runtime(pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    from tests.conftest import REDIS_PREFIX

    rt = Runtime(tmp_path_factory.mktemp("ws"), {"DATABASE_URL": pg_url, "REDIS_URL": redis_url,
                                                 "YMERA_REDIS_KEY_PREFIX": f"{REDIS_PREFIX}e2e-ws:"})
    try:
        rt.wait_ready()
        yield rt
    finally:
        code = rt.stop()
    assert code == 0, f"runtime did not stop cleanly ({code})"


def user(base: str) -> tuple[requests.Session, str, dict[str, Any]]:
    s, name = requests.Session(), f"ws{uuid.uuid4().hex[:8]}"
    assert s.post(f"{base}/auth/register", json={"username": name, "email": f"{name}@example.com",
                                                 "password": "correct horse battery"}, timeout=10).status_code == 201
    token = s.post(f"{base}/auth/login", json={"username": name, "password": "correct horse battery"},
                   timeout=10).json()["access_token"]
    s.headers["Authorization"] = f"Bearer {token}"
    agent = s.post(f"{base}/agents", json={"name": "validator", "type": "validation"}, timeout=5).json()
    return s, token, agent


def websocket_url(s: requests.Session, base: str) -> str:
    return str(s.get(f"{base}/status", timeout=5).json()["websocket_url"])


def create_task(s: requests.Session, base: str, agent: dict[str, Any]) -> str:
    r = s.post(f"{base}/tasks", json={"agent_id": agent["id"], "title": "watch me",
                                      "input_data": {"schema": {"type": "object"}, "payload": {}}}, timeout=5)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def until_terminal(ws: ClientConnection, task_id: str, timeout: float = 30) -> list[dict[str, Any]]:
    """Messages until the task's terminal event (and every other message that arrived meanwhile)."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        got.append(msg)
        if msg.get("resource", {}).get("id") == task_id and msg.get("status") in TERMINAL:
            return got
    raise AssertionError(f"no terminal event for {task_id}: {got}")


def quiet(ws: ClientConnection, seconds: float = 1.5) -> list[dict[str, Any]]:
    out = []
    while True:
        try:
            out.append(json.loads(ws.recv(timeout=seconds)))
        except TimeoutError:
            return out


def test_a_client_sees_its_task_live_and_never_another_users(runtime: Runtime) -> None:
    base = runtime.base
    alice, alice_token, alice_agent = user(base)
    bob, bob_token, bob_agent = user(base)
    ws_url = websocket_url(alice, base)

    with connect(f"{ws_url}/?token={alice_token}", open_timeout=5) as a, \
            connect(f"{ws_url}/?token={bob_token}", open_timeout=5) as b:
        mine, theirs = create_task(alice, base, alice_agent), create_task(bob, base, bob_agent)
        seen_a, seen_b = until_terminal(a, mine), until_terminal(b, theirs)

    assert {m["resource"]["id"] for m in seen_a} == {mine}
    assert {m["resource"]["id"] for m in seen_b} == {theirs}
    statuses = [m["status"] for m in seen_a]
    assert "processing" in statuses and statuses[-1] == "completed"
    assert statuses.index("processing") < statuses.index("completed")
    assert [m["event_id"] for m in seen_a] == sorted(m["event_id"] for m in seen_a)


def test_reconnecting_with_last_event_id_replays_exactly_the_missed_events(runtime: Runtime) -> None:
    base = runtime.base
    s, token, agent = user(base)
    ws_url = websocket_url(s, base)
    with connect(f"{ws_url}/?token={token}", open_timeout=5) as ws:
        first = create_task(s, base, agent)
        seen = until_terminal(ws, first)
    last = seen[-1]["event_id"]

    offline = create_task(s, base, agent)  # nobody listening: these are the missed events
    assert wait_for_terminal(s, base, offline)["status"] == "completed"
    time.sleep(1.5)  # the notifier has moved the cursor past them, delivering to no one

    with connect(f"{ws_url}/?token={token}&last_event_id={last}", open_timeout=5) as ws:
        replayed = quiet(ws)
    ids = [m["event_id"] for m in replayed]
    assert ids == list(range(last + 1, last + 1 + len(ids))), ids  # every missed one, once, in order
    # ... and exactly what the ledger holds after that id (GET /events is the same record).
    assert replayed == s.get(f"{base}/events?after={last}", timeout=5).json()["items"]
    assert {m["resource"]["id"] for m in replayed} == {offline}
    assert [m["status"] for m in replayed][-1] == "completed" and "processing" in [m["status"] for m in replayed]


def test_an_invalid_token_is_refused_at_connect(runtime: Runtime) -> None:
    s, _, _ = user(runtime.base)
    with pytest.raises(InvalidStatus) as info:
        connect(f"{websocket_url(s, runtime.base)}/?token=forged.jwt.value", open_timeout=5)
    assert info.value.response.status_code == 401


def test_the_banner_names_the_websocket_endpoint(runtime: Runtime) -> None:
    s, _, _ = user(runtime.base)
    url = websocket_url(s, runtime.base)
    # API port + 1 unless that port was taken (then free ports, named in the banner all the same).
    assert url.startswith("ws://127.0.0.1:")
    out = runtime.output(tail=10**7)
    assert f"WebSocket    {url}/?token=<access token>" in out
    assert "notifier             functions.notifier.handler  <- looping" in out
