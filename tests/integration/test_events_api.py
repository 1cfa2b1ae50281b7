"""GET /events (cursor pages, owner-filtered, 422s) and the retention purge (docs/events.md)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from chalicelib.db.session import Database
from chalicelib.services.events import EventService
from tests.integration.conftest import Api, FakeContext
from tests.integration.test_api_auth import assert_envelope
from tests.integration.test_api_tasks import create_task
from tests.integration.test_consumer import message, run
from tests.integration.worker_helpers import user_id


def events(api: Api, **query: Any) -> Any:
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    return api.call("GET", f"/events{'?' + qs if qs else ''}")


def test_pages_follow_next_after_until_has_more_is_false(api: Api) -> None:
    api.signup()
    agent = api.agent()
    tasks = [create_task(api, agent["id"]).json_body["id"] for _ in range(2)]
    assert run([(f"m{i}", message(t)) for i, t in enumerate(tasks)]) == {"batchItemFailures": []}
    seen, after, pages = [], 0, 0
    while True:
        page = events(api, after=after, limit=3).json_body
        seen += page["items"]
        pages += 1
        assert page["next_after"] == (page["items"][-1]["event_id"] if page["items"] else after)
        after = page["next_after"]
        if not page["has_more"]:
            break
    # two tasks x pending, queued, processing, completed: 8 events, ids 1..8, in 3 pages
    assert [e["event_id"] for e in seen] == list(range(1, 9)) and pages == 3
    assert [e["status"] for e in seen if e["resource"]["id"] == tasks[0]] == [
        "pending", "queued", "processing", "completed"]
    assert all(e["type"] == "task.status_changed" and e["resource"]["type"] == "task" for e in seen)
    empty = events(api, after=8).json_body
    assert empty == {"items": [], "next_after": 8, "has_more": False}
    assert len(events(api).json_body["items"]) == 8  # defaults: after=0, limit=100


def test_a_user_never_sees_another_users_events(api: Api, other_api: Api) -> None:
    api.signup()
    mine = create_task(api, api.agent()["id"]).json_body
    other_api.signup()
    assert events(other_api).json_body == {"items": [], "next_after": 0, "has_more": False}
    theirs = create_task(other_api, other_api.agent()["id"]).json_body
    # both users now have an event 1: each sees only their own
    got_a = events(api).json_body["items"]
    got_b = events(other_api).json_body["items"]
    assert {e["resource"]["id"] for e in got_a} == {mine["id"]}
    assert {e["resource"]["id"] for e in got_b} == {theirs["id"]}
    assert got_a[0]["event_id"] == got_b[0]["event_id"] == 1


@pytest.mark.parametrize("query", ["after=abc", "after=-1", f"after={2**63}", "limit=0", "limit=501", "limit=x",
                                   "after=1.5", "cursor=abc"])
def test_a_bad_cursor_or_limit_is_422_in_the_envelope(api: Api, query: str) -> None:
    api.signup()
    error = assert_envelope(api.call("GET", f"/events?{query}"), 422, "VALIDATION_ERROR")
    assert error["details"]["errors"][0]["loc"][0] == "query"


def test_events_need_a_token(api: Api) -> None:
    assert_envelope(api.call("GET", "/events", token=""), 401, "AUTHENTICATION_ERROR")


def age(db: Database, owner: Any, days: int, ids: range) -> None:
    with db.transaction() as session:
        session.execute(text("UPDATE events SET occurred_at = now() - make_interval(days => :d) "
                             "WHERE user_id = :u AND event_id BETWEEN :a AND :b"),
                        {"d": days, "u": owner, "a": ids.start, "b": ids.stop - 1})


def test_the_scheduled_relay_purges_events_past_the_retention(api: Api, db: Database) -> None:
    from functions.outbox_relay import handler

    me = api.signup()
    agent = api.agent()
    for _ in range(3):
        create_task(api, agent["id"])  # 6 events (pending, queued)
    owner = user_id(db, me["username"])
    age(db, owner, 8, range(1, 4))  # past the default 7 days
    age(db, owner, 6, range(4, 6))  # not yet
    handler({}, FakeContext())
    assert [e["event_id"] for e in events(api).json_body["items"]] == [4, 5, 6]


def test_the_retention_setting_and_batches(api: Api, db: Database) -> None:
    me = api.signup()
    agent = api.agent()
    for _ in range(3):
        create_task(api, agent["id"])
    owner = user_id(db, me["username"])
    age(db, owner, 3, range(1, 6))
    assert EventService(db, retention_days=7, purge_batch=2).purge_expired() == 0
    # a 2-day retention: 5 events are old, deleted 2 at a time (3 transactions)
    assert EventService(db, retention_days=2, purge_batch=2).purge_expired() == 5
    age(db, owner, 3, range(6, 7))
    once = EventService(db, retention_days=2, purge_batch=1)
    assert once.purge_expired(keep_going=lambda: False) == 1  # out of time after one batch
    assert events(api).json_body["items"] == []
    # ids keep counting after a purge: a client's cursor never sees one reused
    create_task(api, agent["id"])
    assert [e["event_id"] for e in events(api).json_body["items"]] == [7, 8]


def test_the_retention_is_a_setting_defaulting_to_seven_days(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.config import Settings

    assert settings.events_retention_days == 7
    monkeypatch.setenv("YMERA_EVENTS_RETENTION_DAYS", "30")
    assert Settings().events_retention_days == 30
    monkeypatch.setenv("YMERA_EVENTS_RETENTION_DAYS", "0")
    with pytest.raises(ValueError):
        Settings()
