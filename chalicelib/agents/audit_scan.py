"""Suspicious patterns in the audit log: brute force on an account or from an address, refresh-token reuse.

Counting happens in SQL (GROUP BY ... HAVING), so a busy window costs one row per
suspect, not one per event; the queries are plain SQL that SQLite (the local
runtime) runs too. A non-admin sees only the audit rows about their own account:
the scope is a WHERE clause on every query, never a filter afterwards.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from chalicelib.db.models import AuditLog, User

# The event types chalicelib/services/users.py writes (tests/integration/test_security_agent.py pins them
# by logging in with a wrong password through the API).
LOGIN_FAILED = "auth.login_failed"
LOGIN_SUCCEEDED = "auth.login"
REFRESH_REUSE = "auth.refresh_reuse_detected"
#: addresses and accounts listed per finding (the counts are exact; the lists are for a first look).
MAX_LISTED = 20


@dataclass(frozen=True)
class AuditThresholdValues:
    failed_logins_per_account: int
    failed_logins_per_ip: int
    refresh_reuse: int


@dataclass(frozen=True)
class Group:
    key: Any
    count: int
    first_seen: datetime
    last_seen: datetime


def scan_audit_log(session: Session, *, owner_id: uuid.UUID, see_all: bool, start: datetime, end: datetime,
                   thresholds: AuditThresholdValues) -> tuple[list[dict[str, Any]], int]:
    """Findings in [start, end] and how many relevant events were examined."""
    scope: list[ColumnElement[bool]] = [AuditLog.timestamp >= start, AuditLog.timestamp <= end]
    if not see_all:
        scope.append(AuditLog.user_id == owner_id)
    scanned = session.scalar(
        select(func.count()).select_from(AuditLog).where(AuditLog.event_type.in_((LOGIN_FAILED, REFRESH_REUSE)), *scope)
    ) or 0
    findings = [
        *_account_brute_force(session, scope, thresholds.failed_logins_per_account),
        *_ip_brute_force(session, scope, thresholds.failed_logins_per_ip),
        *_refresh_reuse(session, scope, thresholds.refresh_reuse),
    ]
    return findings, int(scanned)


def _groups(session: Session, key: Any, event_type: str, scope: list[ColumnElement[bool]],
            threshold: int) -> list[Group]:
    rows = session.execute(
        select(key, func.count(), func.min(AuditLog.timestamp), func.max(AuditLog.timestamp))
        .where(AuditLog.event_type == event_type, key.is_not(None), *scope)
        .group_by(key)
        .having(func.count() >= threshold)
        .order_by(func.count().desc(), key)
    ).all()
    return [Group(row[0], int(row[1]), row[2], row[3]) for row in rows]


def _distinct(session: Session, key: Any, value: Any, event_type: str, keys: list[Any],
              scope: list[ColumnElement[bool]]) -> dict[Any, list[Any]]:
    """For each key, the distinct values seen with it (addresses of an account, accounts of an address)."""
    found: dict[Any, set[Any]] = defaultdict(set)
    if keys:
        for k, v in session.execute(
            select(key, value).where(AuditLog.event_type == event_type, key.in_(keys), *scope).distinct()
        ):
            found[k].add(v)
    return {k: sorted(vs, key=lambda v: (v is None, str(v))) for k, vs in found.items()}


def _usernames(session: Session, ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    if not ids:
        return {}
    return dict(session.execute(select(User.id, User.username).where(User.id.in_(ids))).tuples().all())


def _account(user_id: uuid.UUID, names: dict[uuid.UUID, str]) -> dict[str, Any]:
    return {"user_id": str(user_id), "username": names.get(user_id)}


def _base(rule: str, severity: str, group: Group, message: str, remediation: str) -> dict[str, Any]:
    return {
        "rule": rule, "name": rule, "severity": severity, "confidence": "high", "line": None, "column": None,
        "snippet": None, "message": message, "remediation": remediation, "scanner": "audit_log",
        # CWE-307: Improper Restriction of Excessive Authentication Attempts; CWE-294: Capture-replay.
        "cwe": "CWE-294" if rule == "refresh-token-reuse" else "CWE-307", "count": group.count,
        "first_seen": group.first_seen.isoformat(), "last_seen": group.last_seen.isoformat(),
    }


def _account_brute_force(session: Session, scope: list[ColumnElement[bool]], threshold: int) -> list[dict[str, Any]]:
    groups = _groups(session, AuditLog.user_id, LOGIN_FAILED, scope, threshold)
    keys = [g.key for g in groups]
    ips = _distinct(session, AuditLog.user_id, AuditLog.client_ip, LOGIN_FAILED, keys, scope)
    names = _usernames(session, set(keys))
    # A success after the failures began may be the attacker getting in: that is what makes it critical.
    succeeded: dict[Any, int] = {}
    if keys:
        firsts = {g.key: g.first_seen for g in groups}
        for user_id, at in session.execute(
            select(AuditLog.user_id, AuditLog.timestamp)
            .where(AuditLog.event_type == LOGIN_SUCCEEDED, AuditLog.user_id.in_(keys), *scope)
        ):
            if at > firsts[user_id]:
                succeeded[user_id] = succeeded.get(user_id, 0) + 1
    findings = []
    for g in groups:
        account = _account(g.key, names)
        after = succeeded.get(g.key, 0)
        finding = _base(
            "brute-force-account", "critical" if after else "high", g,
            f"{g.count} failed logins for {account['username'] or account['user_id']} between "
            f"{g.first_seen.isoformat()} and {g.last_seen.isoformat()}"
            + (f", then {after} successful login(s)" if after else ""),
            "Confirm with the account owner; if the success was not theirs, deactivate the account (which revokes "
            "its sessions) and reset its password. Keep the per-account login rate limit on.",
        )
        seen_ips = ips.get(g.key, [])
        finding.update(accounts=[account], ips=[ip for ip in seen_ips if ip][:MAX_LISTED],
                       successful_logins_after=after)
        findings.append(finding)
    return findings


def _ip_brute_force(session: Session, scope: list[ColumnElement[bool]], threshold: int) -> list[dict[str, Any]]:
    groups = _groups(session, AuditLog.client_ip, LOGIN_FAILED, scope, threshold)
    accounts = _distinct(session, AuditLog.client_ip, AuditLog.user_id, LOGIN_FAILED, [g.key for g in groups], scope)
    names = _usernames(session, {a for found in accounts.values() for a in found if a is not None})
    findings = []
    for g in groups:
        known = [a for a in accounts.get(g.key, []) if a is not None]
        # Failures for usernames that do not exist have no user id: the guesser does not know the accounts.
        unknown = any(a is None for a in accounts.get(g.key, []))
        spraying = len(known) + int(unknown) > 1
        finding = _base(
            "brute-force-ip", "high", g,
            f"{g.count} failed logins from {g.key} against {len(known)} known account(s)"
            + (" and unknown usernames" if unknown else "")
            + (" (password spraying)" if spraying else ""),
            "Block or challenge the address at the edge (WAF rate-based rule) and check the targeted accounts "
            "for successful logins from it.",
        )
        finding.update(accounts=[_account(a, names) for a in known[:MAX_LISTED]], ips=[g.key],
                       unknown_usernames=unknown)
        findings.append(finding)
    return findings


def _refresh_reuse(session: Session, scope: list[ColumnElement[bool]], threshold: int) -> list[dict[str, Any]]:
    groups = _groups(session, AuditLog.user_id, REFRESH_REUSE, scope, threshold)
    keys = [g.key for g in groups]
    ips = _distinct(session, AuditLog.user_id, AuditLog.client_ip, REFRESH_REUSE, keys, scope)
    names = _usernames(session, set(keys))
    findings = []
    for g in groups:
        account = _account(g.key, names)
        finding = _base(
            "refresh-token-reuse", "high", g,
            f"{g.count} retired refresh token(s) of {account['username'] or account['user_id']} replayed: a token "
            "was copied, or a client retried with an old one (the session family was revoked each time)",
            "Ask the user to sign in again and review where their tokens are stored; repeated reuse from an "
            "unfamiliar address means a stolen token.",
        )
        finding.update(accounts=[account], ips=[ip for ip in ips.get(g.key, []) if ip][:MAX_LISTED])
        findings.append(finding)
    return findings
