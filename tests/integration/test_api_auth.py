"""Registration and login over the API, against real Postgres."""

from __future__ import annotations

import time
import uuid

import jwt

from tests.conftest import TEST_SECRET
from tests.integration.conftest import Api


def assert_envelope(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.json_body
    error = response.json_body["error"]
    assert error["code"] == code
    assert set(error) == {"code", "message", "details", "timestamp"}
    assert error["timestamp"].endswith("Z")
    return error


def test_register_then_login_returns_access_and_refresh_tokens(api: Api) -> None:
    r = api.call("POST", "/auth/register", {"username": "alice", "email": "Alice@Example.com",
                                            "password": "correct horse"})
    assert r.status_code == 201
    assert r.json_body["email"] == "alice@example.com"
    assert "password" not in str(r.json_body) and "hash" not in str(r.json_body)
    assert r.headers["Location"] == f"/users/{r.json_body['id']}"

    r = api.call("POST", "/auth/login", {"username": "alice", "password": "correct horse"})
    assert r.status_code == 200
    body = r.json_body
    assert body["token_type"] == "bearer" and body["expires_in"] == 900 and body["refresh_expires_in"] == 604800
    claims = jwt.decode(body["access_token"], TEST_SECRET, algorithms=["HS256"], audience="ymera-api")
    assert claims["typ"] == "access" and claims["exp"] - claims["iat"] == 900
    refresh = jwt.decode(body["refresh_token"], TEST_SECRET, algorithms=["HS256"], audience="ymera-api")
    assert refresh["typ"] == "refresh" and refresh["exp"] - refresh["iat"] == 7 * 24 * 3600


def test_login_by_email_works(api: Api) -> None:
    api.call("POST", "/auth/register", {"username": "bob", "email": "bob@example.com", "password": "hunter2hunter2"})
    r = api.call("POST", "/auth/login", {"username": "BOB@example.com", "password": "hunter2hunter2"})
    assert r.status_code == 200


def test_duplicate_registration_is_409(api: Api) -> None:
    body = {"username": "carol", "email": "carol@example.com", "password": "long enough"}
    assert api.call("POST", "/auth/register", body).status_code == 201
    assert_envelope(api.call("POST", "/auth/register", body), 409, "CONFLICT")
    other = {**body, "username": "carol2"}  # same email, other name
    assert_envelope(api.call("POST", "/auth/register", other), 409, "CONFLICT")


def test_malformed_json_is_400(api: Api) -> None:
    error = assert_envelope(api.call("POST", "/auth/register", raw='{"username": '), 400, "BAD_REQUEST")
    assert "JSON" in error["message"]
    assert_envelope(api.call("POST", "/auth/register", raw="[1, 2]"), 400, "BAD_REQUEST")


def test_wrong_types_and_unknown_fields_are_422_with_locations(api: Api) -> None:
    error = assert_envelope(
        api.call("POST", "/auth/register", {"username": 42, "email": "x@example.com", "password": "long enough",
                                            "role": "admin"}),
        422, "VALIDATION_ERROR")
    locs = {tuple(e["loc"]) for e in error["details"]["errors"]}
    assert ("username",) in locs and ("role",) in locs  # mass assignment of role is refused


def test_73_byte_password_is_422_at_register_and_401_at_login(api: Api) -> None:
    long_password = "é" * 36 + "x"  # 73 bytes in UTF-8, 37 characters
    assert len(long_password.encode()) == 73
    error = assert_envelope(api.call("POST", "/auth/register", {"username": "dave", "email": "dave@example.com",
                                                                "password": long_password}), 422, "VALIDATION_ERROR")
    assert error["details"]["errors"][0]["loc"] == ["password"]
    api.call("POST", "/auth/register", {"username": "dave", "email": "dave@example.com", "password": "short but ok"})
    assert_envelope(api.call("POST", "/auth/login", {"username": "dave", "password": long_password}),
                    401, "AUTHENTICATION_ERROR")


def test_login_failures_are_indistinguishable(api: Api) -> None:
    api.call("POST", "/auth/register", {"username": "erin", "email": "erin@example.com", "password": "right password"})
    wrong = api.call("POST", "/auth/login", {"username": "erin", "password": "wrong password"})
    unknown = api.call("POST", "/auth/login", {"username": "nobody", "password": "wrong password"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json_body["error"]["message"] == unknown.json_body["error"]["message"]
    assert wrong.json_body["error"]["details"] == unknown.json_body["error"]["details"] == {}


def _token(**overrides) -> str:
    now = int(time.time())
    claims = {"iss": "ymera", "aud": "ymera-api", "sub": str(uuid.uuid4()), "typ": "access", "role": "user",
              "jti": "j", "iat": now, "exp": now + 60, **overrides}
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, TEST_SECRET, algorithm="HS256")


def test_expired_tampered_and_forged_tokens_get_the_same_401(api: Api) -> None:
    user = api.signup()
    good = user["access_token"]
    header, payload, signature = good.split(".")
    tampered = ".".join([header, payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1], signature])
    bad_tokens = [
        _token(exp=int(time.time()) - 10, iat=int(time.time()) - 100),  # expired
        tampered,
        jwt.encode({"sub": "x", "typ": "access"}, "another-secret-another-secret-1234", algorithm="HS256"),
        _token(exp=None),  # no exp
        _token(typ="refresh"),  # refresh used as access
        user["refresh_token"],
        "not-a-jwt",
    ]
    for token in bad_tokens:
        r = api.call("GET", "/agents", token=token)
        error = assert_envelope(r, 401, "AUTHENTICATION_ERROR")
        assert error["message"] == "invalid or expired token"
        assert r.headers["WWW-Authenticate"] == "Bearer"
    assert_envelope(api.call("GET", "/agents", token=""), 401, "AUTHENTICATION_ERROR")
    assert api.call("GET", "/agents", token=good).status_code == 200


def test_login_writes_audit_rows(api: Api, db) -> None:
    from sqlalchemy import select

    from chalicelib.db.models import AuditLog

    api.signup("frank")
    api.call("POST", "/auth/login", {"username": "frank", "password": "nope nope"})
    with db.read() as session:
        events = [row.event_type for row in session.scalars(select(AuditLog).order_by(AuditLog.timestamp))]
    assert events == ["auth.register", "auth.login", "auth.login_failed"]
