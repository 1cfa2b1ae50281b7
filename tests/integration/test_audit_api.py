"""GET /audit-logs over the API with real Postgres: admins see every row with filters, a user sees
their own, pages are keyset cursors (newest first, one statement each), and no row ever holds a
password or token."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import event, select, update

from chalicelib.container import Container
from chalicelib.db.models import AuditLog, User
from chalicelib.db.session import Database
from chalicelib.services.audit import REDACTED, scrub
from tests.integration.conftest import Api
from tests.integration.test_api_auth import assert_envelope
from tests.integration.test_cache_api import make_admin, user_id_of


def audit(api: Api, **params: Any) -> Any:
    query = f"?{urlencode(params)}" if params else ""
    return api.call("GET", f"/audit-logs{query}")


def events(api: Api, **params: Any) -> list[str]:
    r = audit(api, **params)
    assert r.status_code == 200, r.json_body
    return [row["event_type"] for row in r.json_body["items"]]


def test_a_user_sees_only_their_own_rows_newest_first(api: Api, other_api: Api, container: Container) -> None:
    api.signup()
    other_api.signup()
    agent = api.agent()
    api.call("PUT", f"/agents/{agent['id']}", {"name": "renamed"})
    other_api.agent()

    r = audit(api)
    assert r.status_code == 200 and r.json_body["next_cursor"] is None
    rows = r.json_body["items"]
    assert [row["event_type"] for row in rows] == ["agent.updated", "agent.created", "auth.login", "auth.register"]
    me = str(user_id_of(api, container))
    assert {row["user_id"] for row in rows} == {me}
    updated = rows[0]
    assert updated["resource_type"] == "agent" and updated["resource_id"] == agent["id"]
    assert updated["action"] == "update" and updated["details"] == {"fields": ["name"]}
    assert set(updated) == {"id", "user_id", "event_type", "action", "resource_type", "resource_id", "details",
                            "client_ip", "request_id", "timestamp"}
    assert datetime.fromisoformat(updated["timestamp"]).tzinfo is not None
    assert events(api, user_id=me) == [row["event_type"] for row in rows]  # naming yourself is fine


def test_another_users_rows_are_404_for_a_user(api: Api, other_api: Api, container: Container) -> None:
    api.signup()
    other_api.signup()
    other = str(user_id_of(other_api, container))
    error = assert_envelope(audit(api, user_id=other), 404, "NOT_FOUND")
    assert error["details"] == {"user_id": other}
    # Same answer for an id that belongs to nobody: the 404 reveals nothing about who exists.
    assert_envelope(audit(api, user_id=str(uuid.uuid4())), 404, "NOT_FOUND")


def test_filters_on_other_columns_stay_inside_the_users_own_rows(api: Api, other_api: Api) -> None:
    api.signup()
    other_api.signup()
    theirs = other_api.agent()
    assert events(api, event_type="agent.created") == []
    assert events(api, resource_type="agent", resource_id=theirs["id"]) == []


def test_admin_sees_everyone_and_filters(api: Api, other_api: Api, db: Database, container: Container) -> None:
    api.signup()
    agent = api.agent()
    api.call("DELETE", f"/agents/{agent['id']}")
    api.call("POST", "/auth/login", {"username": "nobody-at-all", "password": "wrong password!"})
    make_admin(other_api, db)
    user = str(user_id_of(api, container))

    everything = events(other_api)
    assert {"auth.register", "auth.login", "agent.created", "agent.deleted", "auth.login_failed"} <= set(everything)
    assert events(other_api, user_id=user) == ["agent.deleted", "agent.created", "auth.login", "auth.register"]
    assert events(other_api, event_type="auth.login_failed") == ["auth.login_failed"]
    rows = audit(other_api, event_type="auth.login_failed").json_body["items"]
    assert rows[0]["user_id"] is None  # an unknown account: visible to admins only
    assert events(other_api, resource_type="agent", resource_id=agent["id"]) == ["agent.deleted", "agent.created"]
    assert events(other_api, user_id=user, event_type="agent.created") == ["agent.created"]


def test_time_range_needs_a_timezone_and_is_after_inclusive_before_exclusive(api: Api, db: Database) -> None:
    api.signup()
    api.agent()
    with db.read() as session:
        created = session.scalar(select(AuditLog.timestamp).where(AuditLog.event_type == "agent.created"))
    assert created is not None
    at = created.isoformat()
    assert "agent.created" in events(api, after=at)
    assert "agent.created" not in events(api, before=at)
    assert events(api, after=at, before=(created + timedelta(microseconds=1)).isoformat()) == ["agent.created"]
    assert events(api, after=(datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()) == []
    error = assert_envelope(audit(api, after="2026-01-01T00:00:00"), 422, "VALIDATION_ERROR")
    assert error["details"] == {"field": "after"}
    assert_envelope(audit(api, before="yesterday"), 422, "VALIDATION_ERROR")


def test_bad_queries_are_422_and_anonymous_is_401(api: Api) -> None:
    assert_envelope(audit(api), 401, "AUTHENTICATION_ERROR")
    api.signup()
    assert_envelope(audit(api, user_id="not-a-uuid"), 422, "VALIDATION_ERROR")
    assert_envelope(audit(api, limit=0), 422, "VALIDATION_ERROR")
    assert_envelope(audit(api, cursor="%%%"), 422, "VALIDATION_ERROR")
    error = assert_envelope(audit(api, actor="me"), 422, "VALIDATION_ERROR")
    assert error["details"]["errors"][0]["loc"] == ["query", "actor"]


def test_pages_walk_every_row_once_with_one_statement_each(api: Api, db: Database) -> None:
    api.signup()
    agent = api.agent()
    for i in range(6):
        api.call("PUT", f"/agents/{agent['id']}", {"metadata": {"i": i}})
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "audit_logs" in statement:
            statements.append(statement)

    full = [row["id"] for row in audit(api).json_body["items"]]
    assert len(full) == 9
    walked: list[str] = []
    cursor = None
    event.listen(db.engine, "before_cursor_execute", count)
    try:
        pages = 0
        while True:
            statements.clear()
            r = audit(api, limit=4, **({"cursor": cursor} if cursor else {}))
            assert len(statements) == 1  # the page, nothing per row
            pages += 1
            walked += [row["id"] for row in r.json_body["items"]]
            cursor = r.json_body["next_cursor"]
            if cursor is None:
                break
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert walked == full and pages == 3


def test_no_audit_row_holds_a_password_or_token(api: Api, db: Database) -> None:
    """Register, log in (also wrongly), refresh, change the password, log out, replay a retired refresh
    token: then no audit row, in any column, contains the passwords, the tokens, the password hash or
    anything token-shaped."""
    password, new_password = "correct horse battery", "another staple battery"
    account = api.signup(password=password)
    secrets = [password, new_password, "wrong password 123", account["access_token"], account["refresh_token"]]
    api.call("POST", "/auth/login", {"username": account["username"], "password": "wrong password 123"})
    r = api.call("POST", "/auth/refresh", {"refresh_token": account["refresh_token"]})
    assert r.status_code == 200, r.json_body
    secrets += [r.json_body["access_token"], r.json_body["refresh_token"]]
    api.token = r.json_body["access_token"]
    with db.read() as session:
        user = session.scalar(select(User).where(User.username == account["username"]))
        assert user is not None
        secrets.append(user.password_hash)
    r = api.call("PUT", f"/users/{user.id}/password", {"current_password": password, "new_password": new_password})
    assert r.status_code == 200, r.json_body
    token = r.json_body["access_token"]
    secrets += [token, r.json_body["refresh_token"]]
    assert api.call("POST", "/auth/logout", token=token).status_code == 204
    reuse = api.call("POST", "/auth/refresh", {"refresh_token": account["refresh_token"]})  # a retired token
    assert reuse.status_code == 401

    with db.read() as session:
        rows = list(session.scalars(select(AuditLog)))
    assert {"auth.register", "auth.login", "auth.login_failed", "auth.refresh"} <= {row.event_type for row in rows}
    dumped = [repr((row.event_type, row.action, row.resource_type, row.resource_id, row.details, row.client_ip,
                    row.request_id)) for row in rows]
    leaks = [(secret[:12], text) for text in dumped for secret in secrets if secret in text]
    assert leaks == []
    assert [text for text in dumped if "eyJ" in text] == []


def test_secret_looking_details_are_redacted_before_they_are_stored(api: Api, db: Database) -> None:
    """Defence in depth for future callers: `audit.record` scrubs what a careless caller passes."""
    assert scrub({"password": "p", "new_password": "p", "refresh_token": "t", "Authorization": "Bearer x",
                  "token_type": "refresh", "fields": ["name"], "nested": {"api_key": "k", "note": "ok"},
                  "msg": "got eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig here"}) == {
        "password": REDACTED, "new_password": REDACTED, "refresh_token": REDACTED, "Authorization": REDACTED,
        "token_type": "refresh", "fields": ["name"], "nested": {"api_key": REDACTED, "note": "ok"},
        "msg": f"got {REDACTED} here"}
    api.signup()
    with db.transaction() as session:
        session.execute(update(AuditLog).values(details={}))  # unrelated rows: keep the check below focused
    from chalicelib.services import audit as audit_service

    with db.transaction() as session:
        audit_service.record(session, user_id=None, event_type="test.event", action="test",
                             details={"password": "hunter2hunter2"})
    with db.read() as session:
        stored = session.scalar(select(AuditLog.details).where(AuditLog.event_type == "test.event"))
    assert stored == {"password": REDACTED}
