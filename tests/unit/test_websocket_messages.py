"""WebSocket message parsing and filtering (chalicelib.services.websocket, chalicelib.events.connections) and
the local runner's part in the notifier's loop: no network."""

from __future__ import annotations

import threading
import uuid

import pytest

from chalicelib import errors
from chalicelib.events.connections import Connection, Subscription
from chalicelib.services.websocket import parse_subscription, token_from
from infra import manifest
from infra.local.runner import LambdaContext

TASK, RUN = str(uuid.uuid4()), str(uuid.uuid4())


def event(type_: str = "task.status_changed", resource: str = "task", rid: str = TASK,
          run_id: str | None = None) -> dict[str, object]:
    return {"event_id": 1, "type": type_, "resource": {"type": resource, "id": rid}, "run_id": run_id}


def test_an_empty_subscription_passes_everything_and_filters_narrow() -> None:
    assert Subscription().matches(event())
    by_task = Subscription(task_ids=frozenset({TASK}))
    assert by_task.matches(event()) and not by_task.matches(event(rid=str(uuid.uuid4())))
    by_run = Subscription(run_ids=frozenset({RUN}))
    assert by_run.matches(event("run.step_changed", "step", str(uuid.uuid4()), run_id=RUN))
    assert by_run.matches(event("run.status_changed", "run", RUN))
    assert not by_run.matches(event())  # a task outside the run
    typed = Subscription(task_ids=frozenset({TASK}), types=frozenset({"run.status_changed"}))
    assert not typed.matches(event())  # its task, but not a listed type


def test_subscribe_messages_are_validated() -> None:
    sub = parse_subscription({"action": "subscribe", "task_ids": [TASK], "types": ["task.status_changed"]})
    assert sub == Subscription(frozenset({TASK}), frozenset(), frozenset({"task.status_changed"}))
    for bad in ({"action": "subscribe", "task_ids": "x"}, {"action": "subscribe", "task_ids": ["nope"]},
                {"action": "subscribe", "types": [1]}, {"action": "subscribe", "colour": ["red"]},
                {"action": "subscribe", "types": ["t"] * 101}, ["subscribe"]):
        with pytest.raises(errors.ValidationError):
            parse_subscription(bad)


def test_the_token_comes_from_the_query_or_a_bearer_subprotocol() -> None:
    assert token_from({"token": "abc"}, {}) == ("abc", False)
    assert token_from(None, {"Sec-WebSocket-Protocol": "ymera, bearer.abc.def"}) == ("abc.def", True)
    assert token_from({}, {"sec-websocket-protocol": "ymera"}) == (None, False)
    assert token_from({}, {"sec-websocket-protocol": "bearer."}) == (None, False)


def test_connection_entries_round_trip_and_bad_ones_are_skipped() -> None:
    conn = Connection("c1", Subscription(types=frozenset({"x"})), 12.5, replay_after=7, seen_through=3)
    assert Connection.decode("c1", conn.encode()) == conn
    assert Connection.decode("c1", b"not json") is None


def test_the_notifier_is_a_looping_scheduled_function() -> None:
    spec = next(f for f in manifest.functions() if f.name == "notifier")
    assert spec.loops and spec.schedule == "rate(1 minute)" and spec.timeout == 90
    assert "websocket:post" in spec.needs


def test_ctrl_c_leaves_a_local_lambda_no_time() -> None:
    stopping = threading.Event()
    context = LambdaContext("fn", 90, 512, "us-east-1", "123456789012", stopping=stopping)
    assert context.get_remaining_time_in_millis() > 80_000
    stopping.set()
    assert context.get_remaining_time_in_millis() == 0


def test_a_failed_replay_is_asked_for_again() -> None:
    """The replay set is SPOPed: a replay that fails (Redis or Postgres hiccup) goes back, or it would wait
    for the user's next event."""
    from contextlib import contextmanager
    from typing import Any

    from chalicelib.events.notifier import Notifier

    class Db:
        @contextmanager
        def read(self) -> Any:
            yield None

    class Flaky:
        calls = 0

        def replay(self, session: Any, user_id: uuid.UUID) -> int:
            self.calls += 1
            if self.calls == 1:
                raise ConnectionError("redis went away")
            return 1

    class Listener:
        def wait(self, timeout: float) -> int:
            return 0

        def close(self) -> None:
            pass

    user = str(uuid.uuid4())
    pending, retried = [user], []
    flaky = Flaky()
    notifier = Notifier(Db(), [], listener=Listener(), replayer=flaky,  # type: ignore[arg-type]
                        replay_users=lambda: [pending.pop()] if pending else [], replay_retry=retried.append)
    notifier._replays()
    assert retried == [user] and flaky.calls == 1
    pending.extend(retried)
    notifier._replays()
    assert flaky.calls == 2 and retried == [user]  # the second try worked: nothing asked again
