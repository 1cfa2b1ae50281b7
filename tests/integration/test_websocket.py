"""WebSocket notifications (docs/websocket.md) against real Postgres and Redis, through the local gateway
(infra/local/wsgateway.py) with a real WebSocket client: the Chalice handlers decide who connects, the
notifier (chalicelib/events/notifier.py) delivers through the gateway's Management API with boto3."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import jwt
import pytest
from botocore.stub import Stubber
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from chalicelib.config import Settings
from chalicelib.container import Container
from chalicelib.events import ledger
from chalicelib.events.connections import ConnectionIndex
from chalicelib.events.notifier import Notifier
from chalicelib.events.websocket_sink import WebSocketSink
from tests.integration.conftest import Api

PASSWORD = "correct horse battery"


@pytest.fixture
def gateway() -> Iterator[Any]:
    from app import app
    from infra.local.wsgateway import LocalWebSocketGateway, handlers_of

    gw = LocalWebSocketGateway(handlers_of(app), "127.0.0.1", 0, 0).start()
    yield gw
    gw.stop()


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, pg_url: str, redis_url: str, gateway: Any) -> Settings:
    from tests.conftest import REDIS_PREFIX, TEST_SECRET

    for key, value in {"DATABASE_URL": pg_url, "REDIS_URL": redis_url, "YMERA_STAGE": "test",
                       "YMERA_REDIS_KEY_PREFIX": f"{REDIS_PREFIX}{uuid.uuid4().hex[:6]}:",
                       "YMERA_JWT_SECRET": TEST_SECRET, "YMERA_BCRYPT_ROUNDS": "4", "YMERA_QUEUE_PREFIX": "ymera-test",
                       "YMERA_WEBSOCKET_URL": gateway.url, "YMERA_WEBSOCKET_MANAGEMENT_URL": gateway.management_url,
                       "YMERA_WEBSOCKET_MAX_CONNECTIONS_PER_USER": "2"}.items():
        monkeypatch.setenv(key, value)
    return Settings()


def user_id(tokens: dict[str, Any]) -> uuid.UUID:
    return uuid.UUID(jwt.decode(tokens["access_token"], options={"verify_signature": False})["sub"])


def open_ws(gateway: Any, token: str, **query: Any) -> ClientConnection:
    params = "&".join(f"{k}={v}" for k, v in {"token": token, **query}.items())
    return connect(f"{gateway.url}/?{params}", open_timeout=5)


def append(container: Container, owner: uuid.UUID, n: int, *, status: str = "processing",
           resource: uuid.UUID | None = None, type_: str = ledger.TASK_STATUS_CHANGED) -> list[int]:
    with container.db.transaction() as session:
        return [ledger.append(session, owner, type_, "task", resource or uuid.uuid4(), status, {}).event_id
                for _ in range(n)]


def notifier(container: Container) -> Notifier:
    return container.notifier()


def received(ws: ClientConnection, timeout: float = 0.5) -> list[dict[str, Any]]:
    """Every message that arrives until `timeout` passes without one."""
    out = []
    while True:
        try:
            out.append(json.loads(ws.recv(timeout=timeout)))
        except TimeoutError:
            return out


def wait_until(predicate: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def refused_with(gateway: Any, url_query: str, **kwargs: Any) -> int:
    with pytest.raises(InvalidStatus) as info:
        connect(f"{gateway.url}/?{url_query}", open_timeout=5, **kwargs)
    return int(info.value.response.status_code)


# --- connect -----------------------------------------------------------------------------------------------------


def test_an_invalid_or_missing_token_is_refused_at_connect(container: Container, gateway: Any, api: Api) -> None:
    tokens = api.signup()
    assert refused_with(gateway, "token=not-a-jwt") == 401
    assert refused_with(gateway, "") == 401
    assert refused_with(gateway, f"token={tokens['refresh_token']}") == 401  # a refresh token is not an access token
    assert refused_with(gateway, f"token={tokens['access_token']}&last_event_id=-3") == 422
    assert container.websocket_connections.connections(user_id(tokens)) == []


def test_a_token_is_refused_after_logout_and_after_deactivation(container: Container, gateway: Any, api: Api,
                                                               other_api: Api) -> None:
    from chalicelib.admin import main as admin_main

    tokens = api.signup()
    with open_ws(gateway, tokens["access_token"]):
        pass  # accepted while the session is live
    assert api.call("POST", "/auth/logout").status_code == 204
    assert refused_with(gateway, f"token={tokens['access_token']}") == 401

    victim = other_api.signup()
    admin_name = f"root{uuid.uuid4().hex[:6]}"
    assert admin_main(["create-admin", "--username", admin_name, "--email", f"{admin_name}@example.com"],
                      env={"YMERA_ADMIN_PASSWORD": PASSWORD}) == 0
    admin = api.call("POST", "/auth/login", {"username": admin_name, "password": PASSWORD}).json_body
    r = api.call("PUT", f"/users/{user_id(victim)}", {"is_active": False}, token=admin["access_token"])
    assert r.status_code == 200, r.json_body
    assert refused_with(gateway, f"token={victim['access_token']}") == 401


def test_the_token_may_come_as_a_subprotocol_and_is_never_echoed(container: Container, gateway: Any,
                                                                 api: Api) -> None:
    tokens = api.signup()
    with connect(gateway.url, subprotocols=["ymera", f"bearer.{tokens['access_token']}"],  # type: ignore[list-item]
                 open_timeout=5) as ws:
        assert ws.subprotocol == "ymera"
        assert len(container.websocket_connections.connections(user_id(tokens))) == 1
    wait_until(lambda: container.websocket_connections.connections(user_id(tokens)) == [])  # $disconnect ran


def test_a_user_past_the_connection_cap_is_refused_until_one_closes(container: Container, gateway: Any,
                                                                   api: Api) -> None:
    token = api.signup()["access_token"]
    first, second = open_ws(gateway, token), open_ws(gateway, token)
    assert refused_with(gateway, f"token={token}") == 429
    first.close()
    wait_until(lambda: len(container.websocket_connections.connections(user_id({"access_token": token}))) == 1)
    with open_ws(gateway, token):
        pass
    second.close()


def test_status_reports_the_websocket_url(container: Container, gateway: Any, api: Api) -> None:
    api.signup()
    assert api.call("GET", "/status").json_body["websocket_url"] == gateway.url


# --- delivery ----------------------------------------------------------------------------------------------------


def test_a_connection_gets_its_users_events_only_and_redis_hears_them(container: Container, gateway: Any,
                                                                      api: Api, other_api: Api) -> None:
    alice, bob = api.signup(), other_api.signup()
    pubsub = container.redis.pubsub()
    pubsub.subscribe(f"{container.settings.redis_key_prefix}events:{user_id(alice)}")
    with open_ws(gateway, alice["access_token"]) as a, open_ws(gateway, bob["access_token"]) as b:
        mine = append(container, user_id(alice), 3)
        theirs = append(container, user_id(bob), 2)
        notifier(container).round(_report())
        got_a, got_b = received(a), received(b)
    assert [m["event_id"] for m in got_a] == mine
    assert [m["event_id"] for m in got_b] == theirs
    assert set(got_a[0]) == {"event_id", "type", "resource", "run_id", "step_id", "status", "occurred_at", "payload"}
    heard = [json.loads(m["data"]) for m in _drain(pubsub) if m["type"] == "message"]
    assert [m["event_id"] for m in heard] == mine
    with container.db.read() as session:  # the cursor moved: nothing is pending any more
        assert ledger.pending_users(session, 10) == []


def test_subscribe_narrows_a_connection_to_its_tasks_or_types(container: Container, gateway: Any,
                                                              api: Api) -> None:
    tokens = api.signup()
    watched = uuid.uuid4()
    with open_ws(gateway, tokens["access_token"]) as ws:
        ws.send(json.dumps({"action": "subscribe", "task_ids": [str(watched)]}))
        assert json.loads(ws.recv(timeout=3)) == {"type": "ws.subscribed", "subscription": {
            "task_ids": [str(watched)], "run_ids": [], "types": []}}
        ws.send(json.dumps({"action": "subscribe", "task_ids": ["not-a-uuid"]}))
        assert json.loads(ws.recv(timeout=3))["error"]["code"] == "VALIDATION_ERROR"  # the old filter stays
        append(container, user_id(tokens), 2)  # other tasks
        wanted = append(container, user_id(tokens), 1, resource=watched, status="completed")
        notifier(container).round(_report())
        assert [m["event_id"] for m in received(ws)] == wanted

        ws.send(json.dumps({"action": "subscribe", "types": ["run.status_changed"]}))
        ws.recv(timeout=3)
        append(container, user_id(tokens), 1, resource=watched)  # a task event: filtered out now
        notifier(container).round(_report())
        assert received(ws) == []


def closed(ws: ClientConnection, timeout: float = 3.0) -> list[dict[str, Any]]:
    """The messages that arrive before the server closes the connection (AssertionError if it stays open)."""
    from websockets.exceptions import ConnectionClosed

    out = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            out.append(json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic()))))
        except TimeoutError:
            break
        except ConnectionClosed:
            return out
    raise AssertionError("the connection is still open")


def test_a_logout_closes_that_sessions_connections_and_sends_them_nothing_more(container: Container, gateway: Any,
                                                                             api: Api) -> None:
    # GIVEN one user with two sessions (two logins), a connection open on each
    tokens = api.signup()
    owner = user_id(tokens)
    second = api.call("POST", "/auth/login", {"username": tokens["username"], "password": PASSWORD}).json_body
    with open_ws(gateway, tokens["access_token"]) as first_ws, open_ws(gateway, second["access_token"]) as second_ws:
        # WHEN the first session logs out, and an event comes before the notifier has closed anything
        assert api.call("POST", "/auth/logout", token=tokens["access_token"]).status_code == 204
        after = append(container, owner, 1)
        notifier(container).round(_report())
        # THEN the first connection is closed without that event; the other session's connection gets it
        assert closed(first_ws) == []
        assert [m["event_id"] for m in received(second_ws)] == after
        assert len(container.websocket_connections.connections(owner)) == 1


def test_a_logout_alone_wakes_the_notifier_to_close_the_connection(container: Container, gateway: Any,
                                                                   api: Api) -> None:
    tokens = api.signup()
    with open_ws(gateway, tokens["access_token"]) as ws:
        assert api.call("POST", "/auth/logout", token=tokens["access_token"]).status_code == 204
        # no event at all: the notifier's round attends to the user the logout marked
        notifier(container).round(_report())
        assert closed(ws) == []
    assert container.websocket_connections.connections(user_id(tokens)) == []


def test_a_password_change_or_a_deactivation_closes_every_connection_of_the_user(container: Container,
                                                                                 gateway: Any, api: Api,
                                                                                 other_api: Api) -> None:
    from chalicelib.admin import main as admin_main

    tokens = api.signup()
    owner = user_id(tokens)
    second = api.call("POST", "/auth/login", {"username": tokens["username"], "password": PASSWORD}).json_body
    with open_ws(gateway, tokens["access_token"]) as a, open_ws(gateway, second["access_token"]) as b:
        r = api.call("PUT", f"/users/{owner}/password", {"current_password": PASSWORD,
                                                         "new_password": PASSWORD + " again"},
                     token=tokens["access_token"])
        assert r.status_code == 200, r.json_body
        fresh = r.json_body["access_token"]
        notifier(container).round(_report())
        assert closed(a) == [] and closed(b) == []
    with open_ws(gateway, fresh) as c:  # the new session's token connects, and is not ended by the change
        append(container, owner, 1)
        notifier(container).round(_report())
        assert len(received(c)) == 1

    victim = other_api.signup()
    admin_name = f"root{uuid.uuid4().hex[:6]}"
    assert admin_main(["create-admin", "--username", admin_name, "--email", f"{admin_name}@example.com"],
                      env={"YMERA_ADMIN_PASSWORD": PASSWORD}) == 0
    admin = api.call("POST", "/auth/login", {"username": admin_name, "password": PASSWORD}).json_body
    with open_ws(gateway, victim["access_token"]) as v:
        r = api.call("PUT", f"/users/{user_id(victim)}", {"is_active": False}, token=admin["access_token"])
        assert r.status_code == 200, r.json_body
        notifier(container).round(_report())
        assert closed(v) == []


def test_reconnecting_with_last_event_id_replays_exactly_the_missed_events(container: Container, gateway: Any,
                                                                           api: Api) -> None:
    tokens = api.signup()
    owner = user_id(tokens)
    with open_ws(gateway, tokens["access_token"]) as ws:
        seen = append(container, owner, 2)
        notifier(container).round(_report())
        assert [m["event_id"] for m in received(ws)] == seen
    missed = append(container, owner, 3)  # offline: delivered to nobody, the cursor moves on
    notifier(container).round(_report())
    with open_ws(gateway, tokens["access_token"], last_event_id=seen[-1]) as ws:
        notifier(container).round(_report())  # the connect woke it; a round replays
        assert [m["event_id"] for m in received(ws)] == missed
        later = append(container, owner, 1)
        notifier(container).round(_report())
        assert [m["event_id"] for m in received(ws)] == later  # live again, nothing twice


def test_a_gone_connection_is_removed_from_the_index(container: Container, gateway: Any, api: Api) -> None:
    """Through the local gateway's Management API: a closed connection answers 410 GoneException."""
    tokens = api.signup()
    owner = user_id(tokens)
    index = container.websocket_connections
    # A connection whose $disconnect never arrived (the client vanished): still in the index, gone at the gateway.
    assert index.add(owner, "L0SM9cOFvHcCIhw=", cap=5)
    with open_ws(gateway, tokens["access_token"]) as ws:
        append(container, owner, 1)
        notifier(container).round(_report())
        assert len(received(ws)) == 1
        assert "L0SM9cOFvHcCIhw=" not in {c.connection_id for c in index.connections(owner)}
    sink = container.websocket_sink
    assert sink is not None and sink.gone == 1


def test_gone_exception_from_api_gateway_removes_the_connection(container: Container) -> None:
    """The same with AWS's own error shape (botocore Stubber: moto has no apigatewaymanagementapi)."""
    client = boto3.client("apigatewaymanagementapi", endpoint_url="https://abc.execute-api.us-east-1.amazonaws.com/api",
                          region_name="us-east-1")
    index = ConnectionIndex(container.redis, container.settings.redis_key_prefix)
    owner = uuid.uuid4()
    index.add(owner, "gone-1", cap=5)
    index.add(owner, "live-1", cap=5)
    sink = WebSocketSink(index, lambda: client)
    with Stubber(client) as stub:
        stub.add_client_error("post_to_connection", service_error_code="GoneException", http_status_code=410,
                              expected_params={"ConnectionId": "gone-1", "Data": b"hello"})
        stub.add_response("post_to_connection", {}, {"ConnectionId": "live-1", "Data": b"hello"})
        assert sink.post("gone-1", "hello", owner) is False
        assert sink.post("live-1", "hello", owner) is True
    assert [c.connection_id for c in index.connections(owner)] == ["live-1"]
    assert index.user_of("gone-1") is None


def test_the_notifier_returns_within_a_second_when_its_time_runs_out(container: Container) -> None:
    class Context:
        def __init__(self) -> None:
            self.left = 60_000

        def get_remaining_time_in_millis(self) -> int:
            return self.left

    import threading

    context = Context()
    n = notifier(container)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (n.run(context), done.set()))
    thread.start()
    time.sleep(1.5)  # a few rounds, waiting on LISTEN in between
    context.left = 0  # what the local runner does on Ctrl-C
    started = time.monotonic()
    assert done.wait(2.0)
    assert time.monotonic() - started < 1.1
    thread.join()


def test_a_notify_wakes_the_notifier_before_its_sweep(container: Container, gateway: Any, api: Api) -> None:
    """LISTEN/NOTIFY: an event committed while the notifier waits arrives well within the 1 s sweep."""
    import threading

    tokens = api.signup()

    class Context:
        stop = False

        def get_remaining_time_in_millis(self) -> int:
            return 0 if self.stop else 60_000

    context = Context()
    n = notifier(container)
    n.sweep_seconds = 5.0  # only a NOTIFY can make it deliver within the test's window
    thread = threading.Thread(target=n.run, args=(context,))
    with open_ws(gateway, tokens["access_token"]) as ws:
        thread.start()
        time.sleep(0.5)  # it is LISTENing now
        started = time.monotonic()
        append(container, user_id(tokens), 1)
        message = json.loads(ws.recv(timeout=3))
        latency = time.monotonic() - started
    context.stop = True
    thread.join(3)
    assert message["type"] == ledger.TASK_STATUS_CHANGED
    assert latency < 0.5, latency


def _report() -> Any:
    from chalicelib.events.notifier import Report

    return Report()


def _drain(pubsub: Any) -> list[dict[str, Any]]:
    out = []
    while (m := pubsub.get_message(timeout=0.2)) is not None:
        out.append(m)
    return out


def test_the_openapi_document_describes_the_websocket_messages(container: Container, api: Api) -> None:
    import jsonschema

    doc = api.call("GET", "/openapi.json").json_body["x-websocket"]
    subscribe = doc["client_messages"]["subscribe"]
    jsonschema.validate({"action": "subscribe", "task_ids": [str(uuid.uuid4())]}, subscribe)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"action": "subscribe", "colour": ["red"]}, subscribe)
    owner = user_id(api.signup())
    with container.db.transaction() as session:
        event = ledger.append(session, owner, ledger.TASK_STATUS_CHANGED, "task", uuid.uuid4(), "queued", {})
    jsonschema.validate(event.to_json(), doc["server_messages"]["event"])


def test_a_busy_default_websocket_port_falls_back_to_free_ports_unless_it_was_asked_for(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from infra.local.__main__ import StartupError, _start_gateway

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        monkeypatch.delenv("YMERA_WS_PORT", raising=False)
        gw = _start_gateway("127.0.0.1", taken - 1, "ymera-test")  # API port + 1 is the busy one
        try:
            assert gw.port not in (0, taken) and gw.url == f"ws://127.0.0.1:{gw.port}"
        finally:
            gw.stop()
        monkeypatch.setenv("YMERA_WS_PORT", str(taken))
        with pytest.raises(StartupError, match="YMERA_WS_PORT"):
            _start_gateway("127.0.0.1", 8000, "ymera-test")


def test_the_local_management_api_speaks_boto3s_get_and_delete_connection(container: Container, gateway: Any,
                                                                          api: Api) -> None:
    """GET /@connections/{id} answers the wire names botocore parses; DELETE closes the socket (and $disconnect
    runs); both answer GoneException afterwards."""
    tokens = api.signup()
    client = container.websocket_management
    with open_ws(gateway, tokens["access_token"]) as ws:
        [conn] = container.websocket_connections.connections(user_id(tokens))
        info = client.get_connection(ConnectionId=conn.connection_id)
        assert info["Identity"]["SourceIp"] == "127.0.0.1" and info["ConnectedAt"].year >= 2026
        client.delete_connection(ConnectionId=conn.connection_id)
        with pytest.raises(Exception, match="closed by the server|1000"):
            ws.recv(timeout=3)
    wait_until(lambda: container.websocket_connections.connections(user_id(tokens)) == [])
    for call in (client.get_connection, client.delete_connection):
        with pytest.raises(client.exceptions.GoneException):
            call(ConnectionId=conn.connection_id)
