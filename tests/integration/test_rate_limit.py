"""Token-bucket rate limiting against real Redis: exactness under concurrency, refill,
headers, the 429 envelope, login buckets by account and IP, and Redis outages."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
import redis

from chalicelib.config import Settings
from chalicelib.container import Container, set_container
from chalicelib.db.session import Database
from chalicelib.ratelimit import Bucket, LimiterUnavailable, RateLimiter, _OwnConnections
from tests.integration.conftest import Api, FakeContext
from tests.integration.test_api_auth import assert_envelope

#: Refills so slowly that no token comes back while a test runs.
NEVER = 1e-6


@pytest.fixture
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis_url)
    yield client
    client.close()


@pytest.fixture
def limiter(redis_client: redis.Redis, settings: Settings) -> RateLimiter:
    return RateLimiter(redis_client, settings.redis_key_prefix)


def closed_port() -> int:
    """A local port nobody listens on: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unreachable_redis() -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=closed_port(), socket_connect_timeout=0.5, socket_timeout=0.5)


# --- the limiter itself ----------------------------------------------------------------------------------------


def test_50_concurrent_checks_against_a_bucket_of_10_let_exactly_10_through(limiter: RateLimiter) -> None:
    bucket = Bucket("burst", capacity=10, refill_per_second=NEVER, fail_open=True)
    start = threading.Barrier(50)
    results: list[bool] = []
    lock = threading.Lock()

    def call() -> None:
        start.wait()
        decision = limiter.check([(bucket, "same-client")])
        with lock:
            results.append(decision.allowed)

    threads = [threading.Thread(target=call) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(results) == 50
    assert results.count(True) == 10
    after = limiter.check([(bucket, "same-client")])
    assert not after.allowed and after.remaining == 0 and after.retry_after > 0


def own_connection_id(limiter: RateLimiter) -> int:
    """The server's id of the connection the limiter's next check will use (its last used)."""
    connections = limiter._connections
    assert isinstance(connections, _OwnConnections)
    conn, _ = connections.take()
    try:
        conn.send_command("CLIENT", "ID")
        return int(conn.read_response())
    finally:
        connections.give_back(conn)


def test_checks_reuse_one_own_connection_and_leave_the_pool_alone(limiter: RateLimiter,
                                                                   redis_client: redis.Redis) -> None:
    """Sequential checks go out on one connection of the limiter's own; the client's pool lends none."""
    bucket = Bucket("own", capacity=100, refill_per_second=NEVER, fail_open=True)
    limiter.check([(bucket, "a")])
    first = own_connection_id(limiter)
    pool = redis_client.connection_pool
    created = pool._created_connections
    for _ in range(20):
        assert limiter.check([(bucket, "a")]).allowed
    assert own_connection_id(limiter) == first
    assert pool._created_connections == created and not pool._in_use_connections


def test_concurrent_checks_open_at_most_one_connection_each_and_keep_a_few(limiter: RateLimiter) -> None:
    bucket = Bucket("own-many", capacity=1000, refill_per_second=NEVER, fail_open=True)
    start = threading.Barrier(20)

    def call() -> None:
        start.wait()
        for _ in range(5):
            limiter.check([(bucket, "a")])

    threads = [threading.Thread(target=call) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    connections = limiter._connections
    assert isinstance(connections, _OwnConnections)
    assert 1 <= len(connections._idle) <= _OwnConnections.KEEP  # the rest were closed as they came back
    assert limiter.check([(bucket, "a")]).remaining == 1000 - 101


def test_a_check_on_a_connection_redis_dropped_reconnects_and_counts_once(limiter: RateLimiter,
                                                                          redis_client: redis.Redis) -> None:
    """A connection of the limiter's the server closed meanwhile (idle timeout, failover) fails its send or
    read; the connection's retry policy reconnects and sends again: the check answers, and takes one token."""
    bucket = Bucket("dropped", capacity=5, refill_per_second=NEVER, fail_open=True)
    assert limiter.check([(bucket, "a")]).remaining == 4
    own_id = own_connection_id(limiter)
    assert redis_client.client_kill_filter(_id=own_id) == 1  # just the limiter's connection
    decision, values = limiter.check_reading([(bucket, "a")], ["absent-key"])
    assert decision.allowed and decision.remaining == 3 and values == [None]
    assert not limiter.breaker.is_open
    assert own_connection_id(limiter) != own_id


class FlakyConnection(redis.Connection):  # type: ignore[misc]
    """Fails its first `failures` EVALSHA sends (as a socket dropped mid-send does) and records them; the
    handshake a new connection sends passes."""

    failures = 0
    sent: list[list[bytes]] = []
    disconnects = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if b"EVALSHA" not in b"".join(command):
            return super().send_packed_command(command, check_health)
        type(self).sent.append(command)
        if len(type(self).sent) <= type(self).failures:
            raise redis.ConnectionError("dropped")
        return super().send_packed_command(command, check_health)

    def disconnect(self, *args: Any, **kwargs: Any) -> None:
        type(self).disconnects += 1
        super().disconnect(*args, **kwargs)


def flaky_client(settings: Settings, failures: int) -> redis.Redis:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    conn = type("Flaky", (FlakyConnection,), {"failures": failures, "sent": [], "disconnects": 0})
    pool = redis.ConnectionPool.from_url(settings.redis_url, connection_class=conn, retry=Retry(NoBackoff(), 1))
    return redis.Redis(connection_pool=pool)


def test_a_send_that_fails_is_retried_under_the_connections_retry_policy(settings: Settings) -> None:
    """A connection that fails mid-send is closed and the packed command sent again, as often as the
    connection's Retry allows; past that the error reaches the caller (LimiterUnavailable) and the
    connection is closed: the next check opens it again."""
    bucket = Bucket(f"retried-{uuid.uuid4().hex[:8]}", capacity=5, refill_per_second=1.0, fail_open=True)
    once = flaky_client(settings, failures=1)
    conn = once.connection_pool.connection_class
    try:
        limiter = RateLimiter(once, settings.redis_key_prefix)
        assert limiter.check([(bucket, "a")]).remaining == 4
        assert len(conn.sent) == 2 and conn.sent[0] is conn.sent[1]  # the same bytes, sent again
        assert conn.disconnects == 1
        assert b"EVALSHA" in conn.sent[0][0] and f"rl:{bucket.name}:a".encode() in conn.sent[0][0]
    finally:
        once.close()

    always = flaky_client(settings, failures=10)
    conn = always.connection_pool.connection_class
    try:
        limiter = RateLimiter(always, settings.redis_key_prefix)
        with pytest.raises(LimiterUnavailable):
            limiter.check([(bucket, "b")])
        assert len(conn.sent) == 2 and conn.disconnects >= 2  # one retry allowed; closed after the last failure
        assert limiter.breaker.is_open
    finally:
        always.close()


def test_an_error_reply_keeps_the_connection(limiter: RateLimiter, redis_client: redis.Redis) -> None:
    """NOSCRIPT (a restarted Redis) is a whole reply: the script is loaded, the check answers, and the
    connection it came on goes on serving checks."""
    bucket = Bucket("noscript", capacity=5, refill_per_second=NEVER, fail_open=True)
    limiter.check([(bucket, "a")])
    own_id = own_connection_id(limiter)
    redis_client.script_flush()
    assert limiter.check([(bucket, "a")]).remaining == 3
    assert own_connection_id(limiter) == own_id


def test_a_client_without_a_plain_pool_checks_through_execute_command() -> None:
    """Anything but a plain redis-py pool (here: a client pinned to one connection) is asked through
    `execute_command`, which knows its own routing."""
    sent: list[tuple[Any, ...]] = []

    class Client:
        connection = object()
        connection_pool = redis.ConnectionPool()

        def execute_command(self, *args: Any) -> list[int]:
            sent.append(args)
            return [1, 4, 1000, 0]

    bucket = Bucket("pinned", capacity=5, refill_per_second=1.0, fail_open=True)
    assert RateLimiter(Client(), "p:").check([(bucket, "a")]).remaining == 4
    assert sent[0][0] == "EVALSHA" and sent[0][3] == "p:rl:pinned:a"


def test_after_a_fork_the_child_opens_its_own_connection(limiter: RateLimiter) -> None:
    bucket = Bucket("fork", capacity=5, refill_per_second=NEVER, fail_open=True)
    limiter.check([(bucket, "a")])
    connections = limiter._connections
    assert isinstance(connections, _OwnConnections)
    parent_conn = connections._idle[-1]
    connections._pid = -1  # what a forked child sees: another pid than the one the connections were made in
    assert limiter.check([(bucket, "a")]).remaining == 3
    assert parent_conn not in connections._idle and connections._idle
    parent_conn.disconnect()


def test_tokens_refill_over_time_up_to_capacity_only(limiter: RateLimiter) -> None:
    bucket = Bucket("refill", capacity=2, refill_per_second=10, fail_open=True)  # one token per 100 ms
    assert [limiter.check([(bucket, "c")]).allowed for _ in range(3)] == [True, True, False]

    time.sleep(0.15)
    assert limiter.check([(bucket, "c")]).allowed
    assert not limiter.check([(bucket, "c")]).allowed

    time.sleep(1.0)  # long enough for 10 tokens, but the bucket holds 2
    assert [limiter.check([(bucket, "c")]).allowed for _ in range(3)] == [True, True, False]


def test_buckets_are_per_identity(limiter: RateLimiter) -> None:
    bucket = Bucket("ident", capacity=1, refill_per_second=NEVER, fail_open=True)
    assert limiter.check([(bucket, "alice")]).allowed
    assert not limiter.check([(bucket, "alice")]).allowed
    assert limiter.check([(bucket, "bob")]).allowed


def test_a_multi_bucket_check_takes_from_all_or_none(limiter: RateLimiter) -> None:
    account = Bucket("acct", capacity=1, refill_per_second=NEVER, fail_open=False)
    ip = Bucket("ip", capacity=5, refill_per_second=NEVER, fail_open=False)
    assert limiter.check([(account, "alice"), (ip, "10.0.0.1")]).allowed
    refused = limiter.check([(account, "alice"), (ip, "10.0.0.1")])
    assert not refused.allowed and refused.bucket == "acct"
    # The refused attempt did not spend the IP's token: 4 of 5 are left for other accounts.
    assert [limiter.check([(account, f"user{i}"), (ip, "10.0.0.1")]).allowed for i in range(5)] == [
        True, True, True, True, False]


def test_unreachable_redis_raises_and_the_breaker_skips_redis_afterwards() -> None:
    limiter = RateLimiter(unreachable_redis(), "x:", breaker_seconds=30)
    bucket = Bucket("b", capacity=1, refill_per_second=1, fail_open=True)
    with pytest.raises(LimiterUnavailable):
        limiter.check([(bucket, "c")])
    started = time.perf_counter()
    for _ in range(100):
        with pytest.raises(LimiterUnavailable, match="marked down"):
            limiter.check([(bucket, "c")])
    assert time.perf_counter() - started < 0.05


# --- through the API --------------------------------------------------------------------------------------------

LIMITS = {"rate_limit_user_capacity": 3, "rate_limit_user_refill_per_second": 0.5,
          "rate_limit_ip_capacity": 1000, "rate_limit_ip_refill_per_second": 100.0,
          "rate_limit_login_account_capacity": 3, "rate_limit_login_account_refill_per_second": NEVER,
          "rate_limit_login_account_ip_capacity": 2, "rate_limit_login_account_ip_refill_per_second": NEVER,
          "rate_limit_login_ip_capacity": 6, "rate_limit_login_ip_refill_per_second": NEVER}


@pytest.fixture
def limited(settings: Settings, db: Database, aws: Any) -> Iterator[tuple[Api, Any, Container]]:
    """The app with small buckets: (Api helper, the Chalice app, its container)."""
    from chalice.test import Client

    from app import app

    container = Container(settings.model_copy(update=LIMITS), database=db)
    set_container(container)
    with Client(app) as client:
        yield Api(client), app, container
    set_container(None)


def lambda_call(app: Any, method: str, path: str, route: str, *, ip: str, body: Any = None,
                token: str | None = None, path_params: dict[str, str] | None = None) -> dict[str, Any]:
    """Invoke the Lambda entry point directly with an API Gateway event from client `ip`."""
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    event = {"requestContext": {"httpMethod": method, "resourcePath": route, "path": path,
                                "requestId": uuid.uuid4().hex, "identity": {"sourceIp": ip}},
             "headers": headers, "pathParameters": path_params or {}, "stageVariables": {},
             "multiValueQueryStringParameters": None, "body": json.dumps(body) if body is not None else None}
    response = app(event, FakeContext())
    response["json"] = json.loads(response["body"]) if response.get("body") else None
    return dict(response)


def login(app: Any, username: str, password: str, ip: str) -> dict[str, Any]:
    return lambda_call(app, "POST", "/auth/login", "/auth/login", ip=ip,
                       body={"username": username, "password": password})


def test_responses_carry_rate_limit_headers(limited: tuple[Api, Any, Container]) -> None:
    api, _, _ = limited
    api.signup()
    first = api.call("GET", "/agents")
    second = api.call("GET", "/agents")
    assert first.status_code == second.status_code == 200
    assert first.headers["X-RateLimit-Limit"] == "3"
    assert [first.headers["X-RateLimit-Remaining"], second.headers["X-RateLimit-Remaining"]] == ["2", "1"]
    assert int(second.headers["X-RateLimit-Reset"]) > 0


def test_over_the_limit_is_429_in_the_envelope_with_retry_after(limited: tuple[Api, Any, Container]) -> None:
    api, _, _ = limited
    api.signup()
    assert [api.call("GET", "/agents").status_code for _ in range(3)] == [200, 200, 200]

    refused = api.call("GET", "/agents")
    error = assert_envelope(refused, 429, "RATE_LIMITED")
    assert error["details"] == {"bucket": "user", "retry_after_seconds": 2}  # 0.5 tokens/s
    assert refused.headers["Retry-After"] == "2"
    assert refused.headers["X-RateLimit-Remaining"] == "0"

    # Another user (same IP) has a bucket of their own; /health is never limited.
    other = Api(api.client)
    other.signup()
    assert other.call("GET", "/agents").status_code == 200
    assert all("X-RateLimit-Limit" not in api.call("GET", "/health").headers for _ in range(5))


def test_50_concurrent_api_requests_let_exactly_the_bucket_through(limited: tuple[Api, Any, Container]) -> None:
    api, _, container = limited
    api.signup()
    container.settings = container.settings.model_copy(update={"rate_limit_user_capacity": 7,
                                                               "rate_limit_user_refill_per_second": NEVER})
    start = threading.Barrier(50)
    statuses: list[int] = []
    lock = threading.Lock()

    def call() -> None:
        start.wait()
        status = api.call("GET", "/agents").status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=call) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(set(statuses)) == [200, 429]
    assert statuses.count(200) == 7


def test_an_invalid_token_is_limited_by_client_ip(limited: tuple[Api, Any, Container]) -> None:
    api, _, _ = limited
    r = api.call("GET", "/agents", token="not-a-jwt")
    assert r.status_code == 401
    assert r.headers["X-RateLimit-Limit"] == "1000"  # the IP bucket, not a user's


def test_guesses_from_one_address_do_not_lock_the_owner_out(limited: tuple[Api, Any, Container]) -> None:
    api, app, _ = limited
    user = api.signup(password="the right password")
    name = user["username"]
    # GIVEN two wrong guesses at one account from one address (the per-(account, address) budget is 2)...
    assert [login(app, name, "wrong", "198.51.100.1")["statusCode"] for _ in range(2)] == [401, 401]
    # ...THEN that address is refused for that account, even with the right password...
    blocked = login(app, name, "the right password", "198.51.100.1")
    assert blocked["statusCode"] == 429 and blocked["json"]["error"]["code"] == "RATE_LIMITED"
    assert blocked["json"]["error"]["details"]["bucket"] == "login-account-ip"
    assert int(blocked["headers"]["Retry-After"]) > 0
    # ...while the owner, from an address that has not been failing, signs in.
    assert login(app, name, "the right password", "203.0.113.9")["statusCode"] == 200
    # The guessing address may still try other accounts.
    other = Api(api.client).signup(password="other password")
    assert login(app, other["username"], "other password", "198.51.100.1")["statusCode"] == 200


def test_username_and_email_share_one_budget(limited: tuple[Api, Any, Container]) -> None:
    api, app, _ = limited
    user = api.signup(password="the right password")
    email = f"{user['username']}@example.com"
    assert login(app, user["username"], "wrong", "198.51.100.1")["statusCode"] == 401
    assert login(app, email.upper(), "wrong", "198.51.100.1")["statusCode"] == 401
    for spelling in (user["username"], email):
        refused = login(app, spelling, "the right password", "198.51.100.1")
        assert refused["statusCode"] == 429 and refused["json"]["error"]["details"]["bucket"] == "login-account-ip"


def test_a_distributed_guess_gets_one_try_per_address_and_the_owner_still_signs_in(
        limited: tuple[Api, Any, Container]) -> None:
    api, app, _ = limited
    user = api.signup(password="the right password")
    name = user["username"]
    # GIVEN the account-wide budget (3) spent by three addresses...
    assert [login(app, name, "wrong", f"198.51.100.{i}")["statusCode"] for i in (1, 2, 3)] == [401] * 3
    # ...THEN a fresh address gets one guess, not its full budget of 2...
    assert login(app, name, "wrong", "198.51.100.4")["statusCode"] == 401
    assert login(app, name, "wrong", "198.51.100.4")["statusCode"] == 429
    # ...and the owner's right password from their own address still succeeds.
    assert login(app, name, "the right password", "203.0.113.9")["statusCode"] == 200


def test_wrong_current_passwords_spend_the_same_budget(limited: tuple[Api, Any, Container]) -> None:
    api, app, _ = limited
    user = api.signup(password="the right password")
    token = user["access_token"]
    user_id = jwt.decode(token, options={"verify_signature": False})["sub"]

    def change(current: str) -> dict[str, Any]:
        return lambda_call(app, "PUT", f"/users/{user_id}/password", "/users/{user_id}/password",
                           ip="198.51.100.1", token=token, path_params={"user_id": user_id},
                           body={"current_password": current, "new_password": "a new long password"})

    assert [change("wrong")["statusCode"] for _ in range(2)] == [422, 422]
    refused = change("the right password")
    assert refused["statusCode"] == 429 and refused["json"]["error"]["details"]["bucket"] == "login-account-ip"
    assert login(app, user["username"], "the right password", "198.51.100.1")["statusCode"] == 429
    assert login(app, user["username"], "the right password", "203.0.113.9")["statusCode"] == 200


def test_successful_logins_do_not_use_up_the_account_bucket(limited: tuple[Api, Any, Container]) -> None:
    api, app, _ = limited
    user = api.signup(password="the right password")
    # Many devices signing in, each from its own IP: never refused by the account bucket.
    statuses = [login(app, user["username"], "the right password", f"198.51.100.{i}")["statusCode"]
                for i in range(10, 20)]
    assert statuses == [200] * 10


def test_login_bucket_by_ip_blocks_many_accounts_from_one_ip(limited: tuple[Api, Any, Container]) -> None:
    _, app, _ = limited
    statuses = [login(app, f"victim{i}", "guess", "192.0.2.7")["statusCode"] for i in range(7)]
    assert statuses == [401] * 6 + [429]
    refused = login(app, "victim-next", "guess", "192.0.2.7")
    assert refused["json"]["error"]["details"]["bucket"] == "login-ip"
    assert login(app, "victim-next", "guess", "192.0.2.8")["statusCode"] == 401  # another IP still may try


def test_redis_down_general_buckets_fail_open_login_fails_closed(limited: tuple[Api, Any, Container],
                                                                 json_logs: io.StringIO) -> None:
    api, app, container = limited
    user = api.signup(password="the right password")
    container.rate_limiter = RateLimiter(unreachable_redis(), container.settings.redis_key_prefix,
                                         breaker_seconds=30)

    # General buckets: served, without rate-limit headers (nothing was counted), the outage logged once.
    for _ in range(5):
        r = api.call("GET", "/agents")
        assert r.status_code == 200 and "X-RateLimit-Limit" not in r.headers
    assert api.call("POST", "/auth/register", {"username": "newcomer", "email": "n@example.com",
                                               "password": "long enough"}).status_code == 201
    warnings = [line for line in json_logs.getvalue().splitlines() if "rate limiter cannot reach redis" in line]
    assert len(warnings) == 1 and json.loads(warnings[0])["level"] == "WARNING"

    # Login: refused rather than left open to brute force, even with the right password.
    r = login(app, user["username"], "the right password", "198.51.100.1")
    assert r["statusCode"] == 503
    assert r["json"]["error"]["code"] == "DEPENDENCY_UNAVAILABLE"
    assert int(r["headers"]["Retry-After"]) >= 1
