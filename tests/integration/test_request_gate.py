"""One Redis round trip per signed-in request: the rate limiter's script also reads the session keys
(chalicelib.api.identity). Revocation, exactness and outage behaviour are those of the two separate
checks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jwt
import pytest
import redis

from chalicelib.config import Settings
from chalicelib.container import Container, set_container
from chalicelib.db.session import Database
from tests.integration.conftest import Api
from tests.integration.redis_trips import CountingRedis
from tests.integration.test_api_auth import assert_envelope
from tests.integration.test_auth_tokens import _admin_token, assert_dead

#: buffered metrics never flush during a test, so every recorded round trip is the request's own.
QUIET = {"request_metrics_flush_seconds": 3600.0}


@pytest.fixture
def counted(settings: Settings, db: Database, aws: Any) -> Iterator[tuple[Container, CountingRedis]]:
    client = CountingRedis.connect(settings.redis_url)
    container = Container(settings.model_copy(update=QUIET), database=db, redis_client=client)
    set_container(container)
    yield container, client
    set_container(None)
    client.close()


def keys_read(client: CountingRedis) -> int:
    """Keys named by the EVALSHA calls sent: the buckets, plus the session keys when they ride along."""
    return sum(int(command[2]) for command in client.sent if command[0] == "EVALSHA")


def test_logout_is_refused_on_the_very_next_request(api: Api, counted: tuple[Container, CountingRedis]) -> None:
    _, client = counted
    user = api.signup()
    assert api.call("GET", "/agents").status_code == 200  # the session state is cached: alive
    assert api.call("POST", "/auth/logout").status_code == 204
    client.reset_counts()
    assert_dead(api, user["access_token"])
    assert client.trips == [("EVALSHA",)] and keys_read(client) == 1 + 3  # refused from the shared answer


def test_deactivation_is_refused_on_the_very_next_request(api: Api, other_api: Api,
                                                          counted: tuple[Container, CountingRedis]) -> None:
    container, client = counted
    admin_token = _admin_token(api, container)
    bob = other_api.signup()
    assert other_api.call("GET", "/agents").status_code == 200
    bob_id = jwt.decode(bob["access_token"], options={"verify_signature": False})["sub"]
    assert api.call("PUT", f"/users/{bob_id}", {"is_active": False}, token=admin_token).status_code == 200
    client.reset_counts()
    assert_dead(other_api, bob["access_token"])
    assert client.trips == [("EVALSHA",)] and keys_read(client) == 1 + 3


def test_a_bad_token_and_anonymous_routes_keep_the_separate_calls(api: Api,
                                                                  counted: tuple[Container, CountingRedis]) -> None:
    _, client = counted
    assert_envelope(api.call("GET", "/agents", token="not-a-jwt"), 401, "AUTHENTICATION_ERROR")
    assert client.trips == [("EVALSHA",)] and keys_read(client) == 1  # the IP bucket; no session to read
    client.reset_counts()
    api.signup()  # register (IP bucket) and login (IP bucket): anonymous routes, nothing to read
    # ...then login looks at its account's two budgets (one script call) and, on success, clears this
    # address's failures against the account (DEL): the account budgets count failures only.
    assert client.trips == [("EVALSHA",), ("EVALSHA",), ("EVALSHA",), ("DEL",)] and keys_read(client) == 1 + 1 + 2


def test_the_bucket_is_exact_when_redis_forgot_the_script(api: Api, settings: Settings, db: Database,
                                                           aws: Any) -> None:
    """After a Redis restart (SCRIPT FLUSH) EVALSHA fails without taking a token; the limiter loads the
    script and takes exactly one."""
    client = redis.Redis.from_url(settings.redis_url)
    set_container(Container(settings.model_copy(update={"rate_limit_user_capacity": 5,
                                                         "rate_limit_user_refill_per_second": 1e-6}),
                            database=db, redis_client=client))
    try:
        api.signup()
        assert api.call("GET", "/agents").headers["X-RateLimit-Remaining"] == "4"
        client.script_flush()
        assert api.call("GET", "/agents").headers["X-RateLimit-Remaining"] == "3"
        assert api.call("GET", "/agents").headers["X-RateLimit-Remaining"] == "2"
    finally:
        set_container(None)
        client.close()


def test_redis_down_fails_open_checks_postgres_and_waits_for_redis_once(
        api: Api, other_api: Api, container: Container, settings: Settings, db: Database) -> None:
    """GIVEN a deactivated user and a logged-out session, WHEN Redis stops answering, THEN both stay refused
    (Postgres), others are served (the general bucket fails open), and the one failed round trip opens
    both breakers: no later request waits for Redis again."""
    admin_token = _admin_token(api, container)
    victim, logged_out, fresh = other_api.signup(), other_api.signup(), other_api.signup()
    victim_id = jwt.decode(victim["access_token"], options={"verify_signature": False})["sub"]
    assert api.call("PUT", f"/users/{victim_id}", {"is_active": False}, token=admin_token).status_code == 200
    assert api.call("POST", "/auth/logout", token=logged_out["access_token"]).status_code == 204

    dead = CountingRedis.connect("redis://127.0.0.1:1/0")
    set_container(Container(settings.model_copy(update=QUIET), database=db, redis_client=dead))
    try:
        served = api.call("GET", "/agents", token=fresh["access_token"])
        assert served.status_code == 200 and "X-RateLimit-Limit" not in served.headers
        assert_dead(api, victim["access_token"])
        assert_dead(api, logged_out["access_token"])
        assert api.call("GET", "/agents", token=fresh["access_token"]).status_code == 200
        # One attempt in all: the limiter's EVALSHA, which got no further than opening its connection (the
        # limiter's own connection opens at its first send, so the attempt is counted as that send).
        assert dead.trips == [("EVALSHA",)]
    finally:
        set_container(None)


@pytest.mark.parametrize("protocol", [2, 3])
def test_keys_read_by_the_limiter_script_are_none_when_absent_on_either_protocol(settings: Settings,
                                                                                 protocol: int) -> None:
    """An absent key comes back from Lua as nil over RESP2 but as False over RESP3; either way the session
    check must see None (a False revocation value would read as "revoked" and log everyone out)."""
    from chalicelib.ratelimit import Bucket, RateLimiter

    client = redis.Redis.from_url(settings.redis_url, protocol=protocol)
    prefix = settings.redis_key_prefix
    client.set(f"{prefix}present", b"1|user|0")
    try:
        decision, values = RateLimiter(client, prefix).check_reading(
            [(Bucket("user", 5, 1.0, fail_open=True), "u1")], [f"{prefix}present", f"{prefix}absent"])
        assert decision.allowed and decision.remaining == 4
        assert values == [b"1|user|0", None]
    finally:
        client.close()
