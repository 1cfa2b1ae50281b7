"""Tokens, the RBAC table and the session-state encoding: pure logic, no I/O."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import jwt
import pytest

from chalicelib.auth.guard import UserState
from chalicelib.auth.tokens import ACCESS, REFRESH, TokenService
from chalicelib.domain import rbac
from chalicelib.domain.rbac import Permission, Role
from chalicelib.errors import AuthenticationError, AuthorizationError

SECRET = "unit-secret-" + "u" * 40


def service(**overrides: int) -> TokenService:
    return TokenService(SECRET, issuer="ymera", audience="ymera-api", access_ttl=overrides.get("access", 900),
                        refresh_ttl=overrides.get("refresh", 7 * 24 * 3600))


def test_minted_claims_round_trip_with_family_and_version() -> None:
    tokens = service()
    user_id = uuid.uuid4()
    issued = tokens.mint(user_id, "admin", ACCESS, family="fam-1", version=3)
    claims = tokens.verify(issued.token, ACCESS)
    assert claims == issued.claims
    assert (claims.user_id, claims.role, claims.family, claims.version) == (user_id, "admin", "fam-1", 3)
    assert claims.expires_at - claims.issued_at == timedelta(seconds=900)


def test_ttls_are_fifteen_minutes_and_seven_days_by_default() -> None:
    tokens = service()
    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    access = tokens.mint(uuid.uuid4(), "user", ACCESS, now=now).claims
    refresh = tokens.mint(uuid.uuid4(), "user", REFRESH, now=now).claims
    assert access.expires_at == now + timedelta(minutes=15)
    assert refresh.expires_at == now + timedelta(days=7)


@pytest.mark.parametrize(("issued", "expected"), [(ACCESS, REFRESH), (REFRESH, ACCESS)])
def test_one_token_type_never_stands_in_for_the_other(issued: str, expected: str) -> None:
    tokens = service()
    token = tokens.issue(uuid.uuid4(), "user", issued)
    with pytest.raises(AuthenticationError, match="invalid or expired token"):
        tokens.verify(token, expected)


@pytest.mark.parametrize("bad", [{"ver": "1"}, {"ver": 1.5}, {"fam": 7}, {"sub": "not-a-uuid"}])
def test_malformed_session_claims_are_refused(bad: dict) -> None:
    now = int(datetime.now(timezone.utc).timestamp())
    payload = {"iss": "ymera", "aud": "ymera-api", "sub": str(uuid.uuid4()), "typ": ACCESS, "jti": "j",
               "iat": now, "exp": now + 60, **bad}
    with pytest.raises(AuthenticationError):
        service().verify(jwt.encode(payload, SECRET, algorithm="HS256"), ACCESS)


def test_a_token_without_ver_is_version_zero() -> None:
    now = int(datetime.now(timezone.utc).timestamp())
    payload = {"iss": "ymera", "aud": "ymera-api", "sub": str(uuid.uuid4()), "typ": ACCESS, "jti": "j",
               "iat": now, "exp": now + 60}
    assert service().verify(jwt.encode(payload, SECRET, algorithm="HS256"), ACCESS).version == 0


def test_rbac_table_admin_only_permissions() -> None:
    admin_only = [Permission.USERS_LIST, Permission.USERS_READ_ANY, Permission.USERS_UPDATE_ANY]
    for permission in admin_only:
        assert rbac.has_permission(Role.ADMIN, permission)
        assert not rbac.has_permission(Role.USER, permission)
        with pytest.raises(AuthorizationError):
            rbac.require(Role.USER, permission)
    assert rbac.has_permission("user", Permission.AGENTS_MANAGE)


def test_unknown_role_has_no_permission_at_all() -> None:
    assert not any(rbac.has_permission("superuser", p) for p in Permission)


@pytest.mark.parametrize("state", [UserState(True, "admin", 0), UserState(False, "user", 12)])
def test_user_state_encoding_round_trips(state: UserState) -> None:
    assert UserState.decode(state.encode().encode()) == state


@pytest.mark.parametrize("raw", [b"", b"1|user", b"1|user|x", b"\xff\xfe"])
def test_corrupt_cached_state_decodes_to_nothing(raw: bytes) -> None:
    assert UserState.decode(raw) is None
