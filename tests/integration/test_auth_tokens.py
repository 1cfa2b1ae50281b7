"""Tokens over the API against real Postgres and Redis: the JWT attack matrix, refresh rotation and
reuse detection, concurrent refresh, logout, and what Redis trouble does to all of it."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from typing import Any

import jwt
import pytest
import redis
from sqlalchemy import select

from chalicelib.config import Settings
from chalicelib.container import Container, set_container
from chalicelib.db.models import AuditLog, RefreshToken
from chalicelib.db.session import Database
from chalicelib.errors import AuthenticationError
from chalicelib.services.meta import RequestMeta
from tests.conftest import TEST_SECRET
from tests.integration.conftest import Api
from tests.integration.test_api_auth import assert_envelope

PASSWORD = "correct horse battery"


def login(api: Api, username: str, password: str = PASSWORD) -> dict[str, Any]:
    r = api.call("POST", "/auth/login", {"username": username, "password": password}, token="")
    assert r.status_code == 200, r.json_body
    return dict(r.json_body)


def refresh(api: Api, refresh_token: str) -> Any:
    return api.call("POST", "/auth/refresh", {"refresh_token": refresh_token}, token="")


def backdate_use(db: Database, token: str, seconds: float) -> None:
    """As if the refresh token had been rotated `seconds` earlier than it was."""
    from datetime import timedelta

    from sqlalchemy import update

    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    with db.transaction() as session:
        row = session.get(RefreshToken, jti)
        assert row is not None and row.used_at is not None
        session.execute(update(RefreshToken).where(RefreshToken.jti == jti)
                        .values(used_at=row.used_at - timedelta(seconds=seconds)))


def assert_dead(api: Api, access_token: str) -> None:
    error = assert_envelope(api.call("GET", "/agents", token=access_token), 401, "AUTHENTICATION_ERROR")
    assert error["message"] == "invalid or expired token"


def events(db: Database) -> list[str]:
    with db.read() as session:
        return [row.event_type for row in session.scalars(select(AuditLog).order_by(AuditLog.timestamp))]


# --- the attack matrix ------------------------------------------------------------------------------------------


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _claims(user_id: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": "ymera", "aud": "ymera-api", "sub": user_id, "typ": "access", "role": "user",
              "jti": uuid.uuid4().hex, "iat": now, "exp": now + 600, "ver": 0, **overrides}
    return {k: v for k, v in claims.items() if v is not None}


def _forge(kind: str, user_id: str, real_access: str, real_refresh: str) -> str:
    sign = lambda claims, key=TEST_SECRET, alg="HS256": jwt.encode(claims, key, algorithm=alg)  # noqa: E731
    now = int(time.time())
    if kind == "alg_none":
        return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(user_id))}."
    if kind == "alg_hs512_same_key":
        return sign(_claims(user_id), alg="HS512")
    if kind == "tampered_payload":  # take a real token, make ourselves admin, keep the signature
        header, _, signature = real_access.split(".")
        payload = jwt.decode(real_access, options={"verify_signature": False})
        return f"{header}.{_b64({**payload, 'role': 'admin'})}.{signature}"
    if kind == "refresh_as_access":
        return real_refresh
    variants = {
        "wrong_key": lambda: sign(_claims(user_id), key="another-secret-of-sufficient-length-123"),
        "expired": lambda: sign(_claims(user_id, iat=now - 1000, exp=now - 10)),
        "missing_exp": lambda: sign(_claims(user_id, exp=None)),
        "missing_sub": lambda: sign(_claims(user_id, sub=None)),
        "missing_jti": lambda: sign(_claims(user_id, jti=None)),
        "missing_typ": lambda: sign(_claims(user_id, typ=None)),
        "wrong_aud": lambda: sign(_claims(user_id, aud="someone-else")),
        "wrong_iss": lambda: sign(_claims(user_id, iss="evil")),
        "typ_refresh": lambda: sign(_claims(user_id, typ="refresh")),
        "unknown_user": lambda: sign(_claims(str(uuid.uuid4()))),
        "garbage": lambda: "not.a.jwt",
    }
    return variants[kind]()


ATTACKS = ["alg_none", "alg_hs512_same_key", "tampered_payload", "refresh_as_access", "wrong_key", "expired",
           "missing_exp", "missing_sub", "missing_jti", "missing_typ", "wrong_aud", "wrong_iss", "typ_refresh",
           "unknown_user", "garbage"]


def test_a_correctly_forged_token_would_pass_so_the_matrix_tests_only_its_defect(api: Api) -> None:
    user = api.signup()
    sub = jwt.decode(user["access_token"], options={"verify_signature": False})["sub"]
    control = jwt.encode(_claims(sub), TEST_SECRET, algorithm="HS256")
    assert api.call("GET", "/agents", token=control).status_code == 200


@pytest.mark.parametrize("kind", ATTACKS)
def test_every_bad_access_token_gets_the_same_generic_401(api: Api, kind: str) -> None:
    user = api.signup()
    sub = jwt.decode(user["access_token"], options={"verify_signature": False})["sub"]
    r = api.call("GET", "/agents", token=_forge(kind, sub, user["access_token"], user["refresh_token"]))
    error = assert_envelope(r, 401, "AUTHENTICATION_ERROR")
    assert (error["message"], error["details"]) == ("invalid or expired token", {})
    assert r.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("kind", ["access_as_refresh", "alg_none", "wrong_key", "expired", "tampered"])
def test_every_bad_refresh_token_gets_the_same_generic_401(api: Api, kind: str) -> None:
    user = api.signup()
    real = jwt.decode(user["refresh_token"], options={"verify_signature": False})
    if kind == "access_as_refresh":
        token = user["access_token"]
    elif kind == "alg_none":
        token = f"{_b64({'alg': 'none'})}.{_b64(real)}."
    elif kind == "wrong_key":
        token = jwt.encode(real, "another-secret-of-sufficient-length-123", algorithm="HS256")
    elif kind == "expired":
        token = jwt.encode({**real, "exp": int(time.time()) - 5}, TEST_SECRET, algorithm="HS256")
    else:
        header, _, signature = user["refresh_token"].split(".")
        token = f"{header}.{_b64({**real, 'sub': str(uuid.uuid4())})}.{signature}"
    error = assert_envelope(refresh(api, token), 401, "AUTHENTICATION_ERROR")
    assert (error["message"], error["details"]) == ("invalid or expired token", {})
    # None of these touched the real token: it still rotates.
    assert refresh(api, user["refresh_token"]).status_code == 200


# --- refresh rotation and reuse -------------------------------------------------------------------------------


def test_refresh_rotates_the_pair_and_retires_the_old_refresh_token(api: Api, db: Database) -> None:
    first = api.signup()
    r = refresh(api, first["refresh_token"])
    assert r.status_code == 200
    second = r.json_body
    assert second["refresh_token"] != first["refresh_token"] and second["access_token"] != first["access_token"]
    assert (second["expires_in"], second["refresh_expires_in"]) == (900, 604800)
    assert api.call("GET", "/agents", token=second["access_token"]).status_code == 200
    old = jwt.decode(first["refresh_token"], options={"verify_signature": False})
    new = jwt.decode(second["refresh_token"], options={"verify_signature": False})
    assert old["fam"] == new["fam"]  # same session family
    with db.read() as session:
        row = session.get(RefreshToken, old["jti"])
    assert row is not None and row.used_at is not None and row.replaced_by == new["jti"]
    assert events(db)[-1] == "auth.refresh"


def test_replaying_a_retired_refresh_token_revokes_the_whole_family(api: Api, db: Database) -> None:
    user = api.signup()
    other_session = login(api, user["username"])  # a second family, e.g. another device
    rotated = refresh(api, user["refresh_token"]).json_body
    backdate_use(db, user["refresh_token"], 60)  # past the retry grace window (tests/integration/test_sessions.py)

    # An attacker replays the stolen, already-used token.
    error = assert_envelope(refresh(api, user["refresh_token"]), 401, "AUTHENTICATION_ERROR")
    assert error["message"] == "invalid or expired token"

    # The family's newest tokens die too: refresh AND access, before the access token's exp.
    assert_envelope(refresh(api, rotated["refresh_token"]), 401, "AUTHENTICATION_ERROR")
    assert_dead(api, rotated["access_token"])
    assert_dead(api, user["access_token"])
    # The other family is untouched.
    assert api.call("GET", "/agents", token=other_session["access_token"]).status_code == 200
    assert refresh(api, other_session["refresh_token"]).status_code == 200
    assert "auth.refresh_reuse_detected" in events(db)


def test_without_a_grace_window_two_concurrent_refreshes_with_one_token_let_exactly_one_win(
        api: Api, container: Container, db: Database) -> None:
    from chalicelib.services.users import UserService

    users = UserService(container.db, container.hasher, container.tokens, container.sessions,
                        refresh_grace_seconds=0)
    user = api.signup()
    attempts = 8
    barrier = threading.Barrier(attempts)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt() -> None:
        barrier.wait()
        try:
            users.refresh(user["refresh_token"], RequestMeta())
            result = "ok"
        except AuthenticationError:
            result = "401"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=attempt) for _ in range(attempts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["401"] * (attempts - 1) + ["ok"]
    happened = events(db)
    assert happened.count("auth.refresh") == 1
    # The losers presented a token that had just been used: reuse, so the family (winner included) is revoked.
    assert happened.count("auth.refresh_reuse_detected") >= 1
    with db.read() as session:
        live = session.scalars(select(RefreshToken).where(RefreshToken.revoked_at.is_(None))).all()
    assert live == []


# --- logout ---------------------------------------------------------------------------------------------------


def test_logout_kills_the_access_token_before_it_expires_and_the_refresh_family(api: Api, container: Container,
                                                                                db: Database) -> None:
    user = api.signup()
    other = login(api, user["username"])
    assert api.call("GET", "/agents", token=user["access_token"]).status_code == 200  # cached as alive

    r = api.call("POST", "/auth/logout", token=user["access_token"])
    assert r.status_code == 204

    assert_dead(api, user["access_token"])
    assert_envelope(refresh(api, user["refresh_token"]), 401, "AUTHENTICATION_ERROR")
    assert api.call("GET", "/agents", token=other["access_token"]).status_code == 200  # other session lives
    jti = jwt.decode(user["access_token"], options={"verify_signature": False})["jti"]
    ttl = container.redis.ttl(container.sessions.deny_key(jti))
    assert 0 < ttl <= 901  # denylisted until the token's own exp, not forever
    assert events(db)[-1] == "auth.logout"


def test_logout_with_a_refresh_token_also_revokes_that_family(api: Api) -> None:
    user = api.signup()
    other = login(api, user["username"])
    r = api.call("POST", "/auth/logout", {"refresh_token": other["refresh_token"]}, token=user["access_token"])
    assert r.status_code == 204
    assert_envelope(refresh(api, other["refresh_token"]), 401, "AUTHENTICATION_ERROR")
    assert_dead(api, other["access_token"])


def test_logout_refuses_another_users_refresh_token_and_changes_nothing(api: Api, other_api: Api) -> None:
    alice, bob = api.signup(), other_api.signup()
    r = api.call("POST", "/auth/logout", {"refresh_token": bob["refresh_token"]}, token=alice["access_token"])
    assert_envelope(r, 401, "AUTHENTICATION_ERROR")
    assert refresh(api, bob["refresh_token"]).status_code == 200
    assert api.call("GET", "/agents", token=alice["access_token"]).status_code == 200


def test_logout_needs_an_access_token(api: Api) -> None:
    user = api.signup()
    assert_envelope(api.call("POST", "/auth/logout", token=""), 401, "AUTHENTICATION_ERROR")
    assert_envelope(api.call("POST", "/auth/logout", token=user["refresh_token"]), 401, "AUTHENTICATION_ERROR")
    assert_envelope(api.call("POST", "/auth/logout", {"refresh_token": 5}, token=user["access_token"]),
                    422, "VALIDATION_ERROR")


# --- Redis trouble ----------------------------------------------------------------------------------------------

UNREACHABLE = "redis://127.0.0.1:1/0"


@pytest.fixture
def redis_down(settings: Settings, db: Database, aws: Any) -> Any:
    """Install a container whose Redis refuses connections (a real client, a dead port)."""
    client = redis.Redis.from_url(UNREACHABLE, socket_connect_timeout=0.2, socket_timeout=0.2)
    down = Container(settings.model_copy(update={"rate_limit_enabled": False}), database=db, redis_client=client)
    yield down
    set_container(None)


def test_with_redis_down_the_check_falls_back_to_postgres_never_to_a_stale_allow(
        api: Api, other_api: Api, container: Container, redis_down: Container) -> None:
    admin_token = _admin_token(api, container)
    victim, logged_out = other_api.signup(), other_api.signup()
    assert api.call("POST", "/auth/logout", token=logged_out["access_token"]).status_code == 204
    victim_id = jwt.decode(victim["access_token"], options={"verify_signature": False})["sub"]
    # Warm Redis with "victim is active", then deactivate while Redis still works.
    assert api.call("GET", "/agents", token=victim["access_token"]).status_code == 200
    assert api.call("PUT", f"/users/{victim_id}", {"is_active": False}, token=admin_token).status_code == 200

    set_container(redis_down)
    assert_dead(api, victim["access_token"])  # deactivated: Postgres says so
    assert_dead(api, logged_out["access_token"])  # its family is revoked in Postgres
    fresh = other_api.signup()
    assert api.call("GET", "/agents", token=fresh["access_token"]).status_code == 200  # serving goes on


def test_logout_with_redis_down_is_a_503_and_changes_nothing(api: Api, redis_down: Container) -> None:
    user = api.signup()
    set_container(redis_down)
    error = assert_envelope(api.call("POST", "/auth/logout", token=user["access_token"]), 503,
                            "DEPENDENCY_UNAVAILABLE")
    assert error["details"] == {"dependency": "redis"}
    assert api.call("GET", "/agents", token=user["access_token"]).status_code == 200
    assert refresh(api, user["refresh_token"]).status_code == 200


def _admin_token(api: Api, container: Container) -> str:
    from chalicelib.admin import create_admin

    username = f"admin{uuid.uuid4().hex[:6]}"
    create_admin(username, f"{username}@example.com", PASSWORD)
    return str(login(api, username)["access_token"])


def test_logout_denylists_the_access_token_itself(api: Api, container: Container) -> None:
    """A token outside any refresh family (minted directly, e.g. by a tool) dies by its jti alone."""
    from chalicelib.auth.tokens import ACCESS

    user = api.signup()
    sub = uuid.UUID(jwt.decode(user["access_token"], options={"verify_signature": False})["sub"])
    loose = container.tokens.issue(sub, "user", ACCESS)
    assert api.call("GET", "/agents", token=loose).status_code == 200
    assert api.call("POST", "/auth/logout", token=loose).status_code == 204
    assert_dead(api, loose)
    assert api.call("GET", "/agents", token=user["access_token"]).status_code == 200
