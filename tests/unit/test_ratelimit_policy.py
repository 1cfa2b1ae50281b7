"""Which buckets a request must pass, and what the client is told. Pure: no Redis."""

from __future__ import annotations

from chalicelib.config import Settings
from chalicelib.ratelimit import Bucket, Buckets, _decide, account_identity, policy

BUCKETS = Buckets(user=Bucket("user", 120, 2.0, fail_open=True), ip=Bucket("ip", 60, 1.0, fail_open=True),
                  login_account=Bucket("login-account", 20, 1 / 60, fail_open=False),
                  login_account_ip=Bucket("login-account-ip", 5, 1 / 60, fail_open=False),
                  login_ip=Bucket("login-ip", 20, 0.2, fail_open=False))


def test_authenticated_calls_use_the_users_bucket_and_anonymous_ones_the_ip() -> None:
    assert policy(BUCKETS, "GET", "/tasks/{task_id}", user_id="u-1", client_ip="10.0.0.1") == [(BUCKETS.user, "u-1")]
    assert policy(BUCKETS, "POST", "/auth/register", user_id=None, client_ip="10.0.0.1") == [(BUCKETS.ip, "10.0.0.1")]
    assert policy(BUCKETS, "GET", "/status", user_id=None, client_ip=None) == [(BUCKETS.ip, "unknown")]


def test_health_is_exempt() -> None:
    assert policy(BUCKETS, "GET", "/health", user_id=None, client_ip="10.0.0.1") == []


def test_login_passes_the_ip_bucket_before_its_view_even_with_a_token() -> None:
    # The per-account budgets need the resolved account: chalicelib.services.login_throttle spends them.
    assert policy(BUCKETS, "POST", "/auth/login", user_id="u-1", client_ip="10.0.0.1") == [(BUCKETS.login_ip,
                                                                                          "10.0.0.1")]
    assert account_identity("ALICE ") == account_identity("alice") != account_identity("alice2")
    assert "alice" not in account_identity("alice")  # names do not appear in Redis keys


def test_only_the_login_buckets_fail_closed() -> None:
    buckets = Buckets.from_settings(Settings(database_url="sqlite://", jwt_secret="s" * 40))
    assert (buckets.user.fail_open, buckets.ip.fail_open) == (True, True)
    assert (buckets.login_account.fail_open, buckets.login_account_ip.fail_open, buckets.login_ip.fail_open) == (
        False, False, False)
    assert buckets.login_account.capacity < buckets.ip.capacity


def test_headers_describe_the_tightest_bucket_when_allowed_and_the_refusing_one_when_not() -> None:
    account, ip = BUCKETS.login_account, BUCKETS.login_ip
    # raw script result: allowed, then (remaining, ms until full, ms until a token) per bucket
    allowed = _decide([account, ip], [1, 1, 240_000, 0, 19, 5_000, 0])
    assert (allowed.allowed, allowed.bucket, allowed.remaining, allowed.reset_seconds) == (True, "login-account", 1,
                                                                                          240)
    assert allowed.headers() == {"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "1", "X-RateLimit-Reset": "240"}
    refused = _decide([account, ip], [0, 4, 60_000, 0, 0, 100_000, 4_500])
    assert (refused.allowed, refused.bucket, refused.retry_after) == (False, "login-ip", 5)


def test_the_token_bucket_arguments_are_the_bytes_redis_py_would_send() -> None:
    """The limiter encodes a check's ARGV itself, once per bucket combination: byte for byte redis-py's encoding
    of the numbers it used to pass (cost, bucket count, then capacity and refill rate per bucket)."""
    from redis._parsers.encoders import Encoder

    from chalicelib.ratelimit import Bucket, RateLimiter

    limiter = RateLimiter(None, "p:")
    user, ip = Bucket("user", 120, 2.0, fail_open=True), Bucket("ip", 60, 0.5, fail_open=True)
    encoder = Encoder("utf-8", "strict", False)
    for buckets, cost in (((user,), 1), ((user, ip), 1), ((ip,), 3)):
        expected = [cost, len(buckets)] + [v for b in buckets for v in (b.capacity, b.refill_per_second)]
        argv = limiter._bucket_args(buckets, cost)
        assert list(argv) == [encoder.encode(v) for v in expected]
        assert limiter._bucket_args(buckets, cost) is argv  # encoded once
