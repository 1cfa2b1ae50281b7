"""The `security` agent end to end: POST /tasks validation, the consumer, and audit-log scans on real Postgres."""

from __future__ import annotations

import json
import sys
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from chalicelib.db.models import AuditLog, User
from chalicelib.db.session import Database
from chalicelib.db.types import utcnow
from tests.integration.conftest import Api
from tests.integration.test_api_auth import assert_envelope
from tests.integration.test_api_tasks import create_task
from tests.integration.test_consumer import message, run
from tests.unit.test_agent_security import AWS_KEY_ID, DEPLOY, KEY_BODY


def scan_task(api: Api, input_data: dict[str, Any]) -> dict[str, Any]:
    """Create a security task, run the consumer on it, return the task as GET /tasks/{id} shows it."""
    agent = api.agent("security")
    created = create_task(api, agent["id"], input_data=input_data)
    assert created.status_code == 202, created.json_body
    task_id = created.json_body["id"]
    assert run([(f"m-{task_id}", message(task_id, "security"))], "security") == {"batchItemFailures": []}
    return dict(api.call("GET", f"/tasks/{task_id}").json_body)


def user_id(db: Database, username: str) -> uuid.UUID:
    with db.read() as session:
        found = session.scalar(select(User.id).where(User.username == username))
    assert found is not None
    return found


def seed(db: Database, event_type: str, times: list[datetime], *, user: uuid.UUID | None,
         ip: str | None = None) -> None:
    with db.transaction() as session:
        session.add_all(AuditLog(user_id=user, event_type=event_type, action="login", resource_type="user",
                                 client_ip=ip, timestamp=at, details={}) for at in times)


def minutes_ago(now: datetime, *minutes: float) -> list[datetime]:
    return [now - timedelta(minutes=m) for m in minutes]


def test_code_scan_completes_with_located_redacted_findings(api: Api) -> None:
    api.signup()

    task = scan_task(api, {"mode": "code", "content": DEPLOY, "filename": "deploy.py"})

    assert task["status"] == "completed"
    output = task["result"]["output_data"]
    assert [(f["rule"], f["line"]) for f in output["findings"]] == [
        ("B404", 1), ("aws-access-key-id", 3), ("private-key", 4), ("B602", 11), ("B307", 12)]
    assert output["summary"]["total"] == 5
    assert task["result"]["metrics"]["lines_scanned"] == 12
    # The result (what Postgres stores and the API returns besides the caller's own input) holds no secret.
    stored = json.dumps(task["result"])
    assert AWS_KEY_ID not in stored and all(line not in stored for line in KEY_BODY)


@pytest.mark.parametrize(
    ("input_data", "loc"),
    [
        ({"mode": "text"}, ["input_data", "content"]),
        ({"mode": "audit_log", "content": "print(1)"}, ["input_data", "content"]),
        ({"mode": "binary", "content": "x"}, ["input_data", "mode"]),
        ({"content": "GIF89a\x00"}, ["input_data", "content"]),
        ({"mode": "audit_log", "window_minutes": 0}, ["input_data", "window_minutes"]),
    ],
)
def test_post_tasks_refuses_input_that_does_not_fit_its_mode(api: Api, input_data: dict[str, Any],
                                                             loc: list[str]) -> None:
    api.signup()
    agent = api.agent("security")

    error = assert_envelope(create_task(api, agent["id"], input_data=input_data), 422, "VALIDATION_ERROR")

    assert [e["loc"] for e in error["details"]["errors"]] == [loc]


def test_agent_config_is_checked_against_the_security_schema(api: Api) -> None:
    api.signup()
    r = api.call("POST", "/agents", {"name": "sec", "type": "security",
                                     "config": {"thresholds": {"failed_logins_per_account": 0}}})

    error = assert_envelope(r, 422, "VALIDATION_ERROR")
    assert error["details"]["errors"][0]["loc"] == ["config", "thresholds", "failed_logins_per_account"]


def test_missing_scanner_fails_the_task_with_a_clear_code(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    api.signup()
    for module in ("bandit", "bandit.core", "bandit.core.config", "bandit.core.manager", "bandit.core.docs_utils"):
        monkeypatch.setitem(sys.modules, module, None)

    task = scan_task(api, {"content": DEPLOY, "language": "python"})

    assert task["status"] == "failed"
    assert task["error"]["code"] == "SCANNER_UNAVAILABLE"
    assert task["error"]["details"]["scanner"] == "bandit"


def test_audit_log_brute_force_on_the_owners_account(api: Api, db: Database) -> None:
    """GIVEN 12 failed logins on my account in the last 10 minutes (and noise that must not count)
    WHEN I scan the audit log with the default window (15 min) and thresholds (10 per account)
    THEN one brute-force finding with the exact count, first/last seen and addresses, plus the token reuse."""
    me = api.signup()["username"]
    owner = user_id(db, me)
    stranger = user_id(db, Api(api.client).signup()["username"])
    now = utcnow()
    with db.transaction() as session:  # my sign-ins happened an hour before the attack
        session.execute(update(AuditLog).where(AuditLog.user_id == owner, AuditLog.event_type == "auth.login")
                        .values(timestamp=now - timedelta(hours=1)))
    failures = minutes_ago(now, *range(10, 4, -1)) + minutes_ago(now, *range(6, 0, -1))
    seed(db, "auth.login_failed", failures[:6], user=owner, ip="203.0.113.7")
    seed(db, "auth.login_failed", failures[6:], user=owner, ip="198.51.100.4")
    seed(db, "auth.login_failed", minutes_ago(now, 120, 121, 122), user=owner, ip="203.0.113.7")  # too old
    seed(db, "auth.login_failed", minutes_ago(now, *range(1, 26)), user=stranger, ip="192.0.2.1")  # not mine
    seed(db, "auth.refresh_reuse_detected", minutes_ago(now, 3), user=owner, ip="192.0.2.99")

    task = scan_task(api, {"mode": "audit_log"})

    assert task["status"] == "completed", task["error"]
    output = task["result"]["output_data"]
    assert output["scope"] == "own_account" and output["window"]["minutes"] == 15
    brute, reuse = output["findings"]
    assert (brute["rule"], brute["severity"], brute["count"]) == ("brute-force-account", "high", 12)
    assert datetime.fromisoformat(brute["first_seen"]) == failures[0]
    assert datetime.fromisoformat(brute["last_seen"]) == failures[-1]
    assert brute["ips"] == ["198.51.100.4", "203.0.113.7"]
    assert brute["accounts"] == [{"user_id": str(owner), "username": me}]
    assert brute["successful_logins_after"] == 0 and brute["line"] is None
    assert (reuse["rule"], reuse["count"], reuse["ips"]) == ("refresh-token-reuse", 1, ["192.0.2.99"])
    assert output["summary"] == {"by_severity": {"critical": 0, "high": 2, "medium": 0, "low": 0}, "total": 2}
    assert task["result"]["metrics"]["events_scanned"] == 13  # 12 failures + 1 reuse, mine, in the window


def test_admin_scans_everyone_and_sees_spraying_and_a_login_after_the_attack(api: Api, db: Database) -> None:
    admin = api.signup()["username"]
    with db.transaction() as session:
        session.execute(update(User).where(User.username == admin).values(role="admin"))
    victim_a = user_id(db, Api(api.client).signup()["username"])
    victim_b = user_id(db, Api(api.client).signup()["username"])
    now = utcnow()
    with db.transaction() as session:  # the victims' sign-ups were long before
        session.execute(update(AuditLog).where(AuditLog.event_type == "auth.login")
                        .values(timestamp=now - timedelta(days=1)))
    seed(db, "auth.login_failed", minutes_ago(now, *range(12, 0, -1)), user=victim_a, ip="203.0.113.7")
    seed(db, "auth.login_failed", minutes_ago(now, *range(9, 0, -1)), user=victim_b, ip="203.0.113.7")
    seed(db, "auth.login_failed", minutes_ago(now, 4, 3, 2, 1), user=None, ip="203.0.113.7")
    seed(db, "auth.login", minutes_ago(now, 0.5), user=victim_a, ip="203.0.113.7")  # ...and got in

    task = scan_task(api, {"mode": "audit_log", "window_minutes": 30, "thresholds": {"failed_logins_per_ip": 25}})

    output = task["result"]["output_data"]
    assert output["scope"] == "all_users" and output["thresholds"]["failed_logins_per_ip"] == 25
    assert [(f["rule"], f["severity"], f["count"]) for f in output["findings"]] == [
        ("brute-force-account", "critical", 12),  # victim_b's 9 stay under 10
        ("brute-force-ip", "high", 25),
    ]
    account, ip = output["findings"]
    assert account["successful_logins_after"] == 1 and "then 1 successful login" in account["message"]
    assert {a["user_id"] for a in ip["accounts"]} == {str(victim_a), str(victim_b)}
    assert ip["unknown_usernames"] is True and "password spraying" in ip["message"]


def test_failed_logins_through_the_api_are_what_the_scan_counts(api: Api) -> None:
    """Pins the event names: real wrong-password logins, not seeded rows."""
    me = api.signup()["username"]
    for _ in range(3):
        r = api.call("POST", "/auth/login", {"username": me, "password": "not my password"}, token="")
        assert r.status_code == 401

    task = scan_task(api, {"mode": "audit_log", "thresholds": {"failed_logins_per_account": 3}})

    (finding,) = task["result"]["output_data"]["findings"]
    assert (finding["rule"], finding["count"], finding["successful_logins_after"]) == ("brute-force-account", 3, 0)
