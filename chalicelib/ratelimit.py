"""Token-bucket rate limiting in Redis.

One Lua script per check does read-refill-take for every bucket of the check,
so concurrent Lambda containers can never both spend the last token. The
script reads the clock with Redis `TIME`: callers' clocks (many containers)
never disagree about how much a bucket has refilled.

A check may name several buckets; a token is taken from each only when all of
them have one, so a blocked identity does not also drain the others' buckets.
Sign-in attempts pass the `login-ip` bucket here; the per-account budgets need
the resolved account and are spent after the password check
(chalicelib.services.login_throttle, `spend`).

Failure modes are part of each bucket (see `policy`): general buckets fail
OPEN (a Redis outage must not take the API down with it), the login buckets
fail CLOSED (brute-force protection must not vanish while Redis is down).

Buckets of one check share a Lua call, so on Redis Cluster their keys would
need one hash slot; ElastiCache is expected in cluster-mode-disabled.

`check_reading` also returns the values of other keys (the session lookup),
read by the same script call: the request pays one round trip for both checks,
and the values are read in the same atomic step as the buckets are updated.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from chalicelib.config import Settings
from chalicelib.observability import logger

# Shared by both scripts: the clock (Redis < 5 replicates scripts verbatim and refuses writes after TIME
# unless told to replicate effects) and one bucket's level refilled up to now.
_PRELUDE_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function refill(key, capacity, rate, now)
  local state = redis.call('HMGET', key, 't', 'ts')
  local level = tonumber(state[1])
  local last = tonumber(state[2])
  if level == nil or last == nil then return capacity end
  return math.min(capacity, level + math.max(0, now - last) * rate)
end
"""

# KEYS: one per bucket, then keys only to read. ARGV: cost, the number of buckets, then (capacity, refill per
# second) per bucket. Returns {allowed, then (remaining, ms until full, ms until `cost` tokens) per bucket,
# then the value of each key to read (nil when absent)}.
_TOKEN_BUCKET_LUA = _PRELUDE_LUA + """
local cost = tonumber(ARGV[1])
local buckets = tonumber(ARGV[2])
local tokens = {}
local allowed = 1
for i = 1, buckets do
  local capacity = tonumber(ARGV[2 * i + 1])
  local rate = tonumber(ARGV[2 * i + 2])
  local level = refill(KEYS[i], capacity, rate, now)
  tokens[i] = level
  if level < cost then allowed = 0 end
end
local result = {allowed}
for i = 1, buckets do
  local capacity = tonumber(ARGV[2 * i + 1])
  local rate = tonumber(ARGV[2 * i + 2])
  local level = tokens[i]
  if allowed == 1 then level = level - cost end
  redis.call('HSET', KEYS[i], 't', string.format('%.6f', level), 'ts', string.format('%.6f', now))
  local full_ms = math.ceil((capacity - level) / rate * 1000)
  -- An absent key reads as a full bucket, so the key may go once it would be full again.
  redis.call('PEXPIRE', KEYS[i], full_ms + 1000)
  local wait_ms = 0
  if level < cost then wait_ms = math.ceil((cost - level) / rate * 1000) end
  result[#result + 1] = math.floor(level)
  result[#result + 1] = full_ms
  result[#result + 1] = wait_ms
end
if #KEYS > buckets then
  local values = redis.call('MGET', unpack(KEYS, buckets + 1, #KEYS))
  for i = 1, #KEYS - buckets do result[#result + 1] = values[i] end  -- false (absent) is sent as nil
end
return result
"""
# The sign-in throttle's script (chalicelib.services.login_throttle): like the one above, but each bucket has its own
# cost and its own level it must hold for the call to pass. KEYS: one per bucket. ARGV: the number of
# buckets, then (capacity, refill per second, cost, tokens needed) per bucket. A refused call writes nothing; an
# allowed one takes each bucket's cost (never below zero). Returns {allowed, then (tokens before the call in
# thousandths, ms until one token after it) per bucket}.
_SPEND_LUA = _PRELUDE_LUA + """
local buckets = tonumber(ARGV[1])
local levels = {}
local allowed = 1
for i = 1, buckets do
  local capacity = tonumber(ARGV[4 * i - 2])
  local rate = tonumber(ARGV[4 * i - 1])
  local level = refill(KEYS[i], capacity, rate, now)
  levels[i] = level
  if level < tonumber(ARGV[4 * i + 1]) then allowed = 0 end
end
local result = {allowed}
for i = 1, buckets do
  local capacity = tonumber(ARGV[4 * i - 2])
  local rate = tonumber(ARGV[4 * i - 1])
  local cost = tonumber(ARGV[4 * i])
  local level = levels[i]
  if allowed == 1 and cost > 0 then
    level = math.max(0, level - cost)
    redis.call('HSET', KEYS[i], 't', string.format('%.6f', level), 'ts', string.format('%.6f', now))
    redis.call('PEXPIRE', KEYS[i], math.ceil((capacity - level) / rate * 1000) + 1000)
  end
  local wait_ms = 0
  if level < 1 then wait_ms = math.ceil((1 - level) / rate * 1000) end
  result[#result + 1] = math.floor(levels[i] * 1000)
  result[#result + 1] = wait_ms
end
return result
"""
#: The name Redis files the token-bucket script under (SCRIPT LOAD answers the same SHA1).
_TOKEN_BUCKET_SHA = hashlib.sha1(_TOKEN_BUCKET_LUA.encode()).hexdigest()  # noqa: S324 - a name, not a secret
_TOKEN_BUCKET_SHA_BYTES = _TOKEN_BUCKET_SHA.encode()


def _round_trip(conn: Any, packed: list[bytes]) -> Any:
    conn.send_packed_command(packed)
    return conn.read_response()  # raises an error reply (NOSCRIPT: NoScriptError) as redis-py's parser maps it


#: Every Lua script this module runs (the local runtime preloads them into its embedded Redis).
LUA_SCRIPTS: tuple[str, ...] = (_TOKEN_BUCKET_LUA, _SPEND_LUA)


@dataclass(frozen=True)
class Spend:
    """One bucket of a `RateLimiter.spend` call."""

    bucket: Bucket
    identity: str
    cost: float
    #: the call passes (and takes anything) only if this bucket holds this many tokens; 0 = no condition.
    need: float = 0


@dataclass(frozen=True)
class Level:
    tokens: float  # before the call
    retry_after: int  # seconds until the bucket holds one token again, after the call


@dataclass(frozen=True)
class Bucket:
    name: str
    capacity: int
    refill_per_second: float
    #: what a check does when Redis cannot answer: serve (True) or refuse (False).
    fail_open: bool


@dataclass(frozen=True)
class Decision:
    allowed: bool
    bucket: str  # the bucket the headers describe: the one that refused, or the one with least left
    limit: int
    remaining: int
    reset_seconds: int  # until the bucket is full again
    retry_after: int  # seconds until the request would pass; 0 when allowed

    def headers(self) -> dict[str, str]:
        return {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(self.remaining),
                "X-RateLimit-Reset": str(self.reset_seconds)}


class _OwnConnections:
    """The limiter's own connections to its client's Redis, last used first; one per thread checking at once.

    The rate-limit check is the one Redis round trip of most requests. Checking a connection out of redis-py's
    pool costs more than the command's own client-side work: a `poll` syscall per checkout (is there unread
    data?), a lock, observability counters and an event dispatch per release (~20 us of a cached
    `GET /tasks/{id}`, measured A/B in-process). The limiter reads every reply it asks for whole, or
    disconnects and drops the connection, so a connection it takes back holds nothing unread and needs no poll;
    one the server closed while it sat idle fails its first send or read and is reopened once (`_evalsha`).
    Built from the pool's own connection class and arguments (the same server, credentials, TLS, protocol);
    not counted in the pool's `max_connections`: at most `KEEP` stay open, more are closed on return.
    After a fork the parent's connections are dropped, not shared.
    """

    KEEP = 8

    def __init__(self, pool: Any) -> None:
        from redis.exceptions import ConnectionError as DroppedError
        from redis.exceptions import ResponseError

        self._pool = pool
        self._idle: list[Any] = []
        self._pid = os.getpid()
        #: an error reply (NOSCRIPT, ...): read whole, so the connection stays usable.
        self.reply_error: type[Exception] = ResponseError
        #: the connection closed under a send or read (not a timeout: then the server may be running it).
        self.dropped_error: type[Exception] = DroppedError

    @classmethod
    def of(cls, client: Any) -> _OwnConnections | object:
        """Own connections for `client`, or `_NOT_OWN` when its pool is not one whose arguments make a
        connection on their own."""
        from redis import BlockingConnectionPool, ConnectionPool

        pool = getattr(client, "connection_pool", None)
        if (type(pool) not in (ConnectionPool, BlockingConnectionPool) or getattr(client, "connection", None)
                is not None or getattr(pool, "cache", None) is not None):
            return _NOT_OWN
        return cls(pool)

    def take(self) -> tuple[Any, bool]:
        """A connection, and whether it served a check before (an idle one; it may have been closed by the
        server since). Only connections whose last round trip was read whole are ever given back."""
        if self._pid != os.getpid():
            self._idle, self._pid = [], os.getpid()  # the parent's sockets: not ours to use or to close
        try:
            return self._idle.pop(), True  # list.pop and append are atomic: no lock
        except IndexError:
            return self._pool.connection_class(**self._pool.connection_kwargs), False  # connects on first send

    def give_back(self, conn: Any) -> None:
        if len(self._idle) < self.KEEP:
            self._idle.append(conn)
        else:
            conn.disconnect()


#: `_OwnConnections.of` for a client whose commands go through `execute_command`.
_NOT_OWN = object()


class LimiterUnavailable(Exception):
    """Redis could not answer; the caller applies the buckets' failure mode."""


class Breaker:
    """After a failure, report "down" for `seconds` instead of paying a timeout per request."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._open_until = 0.0

    @property
    def is_open(self) -> bool:
        return self._clock() < self._open_until

    def trip(self) -> None:
        self._open_until = self._clock() + self.seconds


class RateLimiter:
    def __init__(self, client: Any, key_prefix: str, breaker_seconds: float = 5.0) -> None:
        """`client` None (no Redis configured) behaves as Redis down: each bucket's failure mode applies."""
        self._client = client
        self.key_prefix = key_prefix
        self.breaker = Breaker(breaker_seconds)
        self._spend_script: Any = None
        self._lock = threading.Lock()
        self._connections: _OwnConnections | object | None = None  # built on the first check
        #: the token-bucket script's ARGV per (cost, buckets), as the bytes Redis receives (see `_bucket_args`).
        self._argv: dict[tuple[int, tuple[Bucket, ...]], tuple[bytes, ...]] = {}

    def _token_bucket(self, keys: list[str], argv: tuple[bytes, ...]) -> Any:
        """EVALSHA of the token-bucket script; on NOSCRIPT (a restarted or failed-over Redis) SCRIPT LOAD, then
        EVALSHA again: what redis-py's `Script` does, without its per-call wrapping."""
        from redis.exceptions import NoScriptError

        try:
            return self._evalsha(keys, argv)
        except NoScriptError:
            self._client.script_load(_TOKEN_BUCKET_LUA)
            return self._evalsha(keys, argv)

    def _evalsha(self, keys: list[str], argv: tuple[bytes, ...]) -> Any:
        """The request's one round trip: the command packed here (RESP is an array of length-prefixed strings)
        and sent on one of the limiter's own connections (`_OwnConnections`) with the connection's retry policy
        (a dropped connection is closed and the send retried, as `execute_command` does); none of
        `execute_command`'s per-command packing, hooks and bookkeeping, nor the pool's per-checkout poll.
        A client whose pool is not a plain redis-py pool (a cluster, Sentinel, client-side caching, a client
        pinned to one connection): `execute_command`."""
        connections = self._connections
        if connections is None:
            connections = self._connections = _OwnConnections.of(self._client)
        if not isinstance(connections, _OwnConnections):
            return self._client.execute_command("EVALSHA", _TOKEN_BUCKET_SHA, len(keys), *keys, *argv)
        parts = [b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n" % (3 + len(keys) + len(argv), _TOKEN_BUCKET_SHA_BYTES)]
        for arg in (str(len(keys)).encode(), *(key.encode() for key in keys), *argv):
            parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
        packed = [b"".join(parts)]
        conn, reused = connections.take()
        try:
            try:
                reply = conn.retry.call_with_retry(lambda: _round_trip(conn, packed), lambda _e: conn.disconnect())
            except connections.dropped_error:
                if not reused:
                    raise
                # The server closed it while it sat idle (idle timeout, restart, failover), which the pool
                # notices with its poll at checkout: once more, on a new connection. Never a second run of
                # the script: a closed connection took no command.
                conn.disconnect()
                reply = conn.retry.call_with_retry(lambda: _round_trip(conn, packed), lambda _e: conn.disconnect())
        except connections.reply_error:
            connections.give_back(conn)  # an error reply (NOSCRIPT) was read whole: the connection is clean
            raise
        except BaseException:
            conn.disconnect()  # whatever is left unread on it goes with it
            raise
        connections.give_back(conn)
        return reply

    def _bucket_args(self, buckets: tuple[Bucket, ...], cost: int) -> tuple[bytes, ...]:
        """ARGV for `buckets`: cost, count, then (capacity, refill per second) per bucket; encoded once per
        combination (a handful: the policy's buckets come from the settings) as redis-py would encode them."""
        argv = self._argv.get((cost, buckets))
        if argv is None:
            values: list[float] = [cost, len(buckets)]
            for bucket in buckets:
                values += [bucket.capacity, bucket.refill_per_second]
            argv = tuple(repr(v).encode() for v in values)
            if len(self._argv) < 64:
                self._argv[(cost, buckets)] = argv
        return argv

    def _spender(self) -> Any:
        if self._spend_script is None:
            with self._lock:
                if self._spend_script is None:
                    self._spend_script = self._client.register_script(_SPEND_LUA)
        return self._spend_script

    def spend(self, spends: Sequence[Spend]) -> tuple[bool, list[Level]]:
        """Take each bucket's cost, or nothing when a bucket holds less than it needs; one Redis round trip.

        Raises LimiterUnavailable (these buckets fail closed: the caller refuses).
        """
        from redis.exceptions import RedisError

        if self._client is None:
            raise LimiterUnavailable("redis is not configured")
        if self.breaker.is_open:
            raise LimiterUnavailable("redis marked down")
        args: list[float] = [len(spends)]
        for s in spends:
            args += [s.bucket.capacity, s.bucket.refill_per_second, s.cost, s.need]
        try:
            raw = self._spender()(keys=[self.key(s.bucket, s.identity) for s in spends], args=args)
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        levels = [Level(int(raw[1 + 2 * i]) / 1000, max(1, math.ceil(int(raw[2 + 2 * i]) / 1000))
                  if int(raw[2 + 2 * i]) else 0) for i in range(len(spends))]
        return int(raw[0]) == 1, levels

    def key(self, bucket: Bucket, identity: str) -> str:
        return f"{self.key_prefix}rl:{bucket.name}:{identity}"

    @property
    def client(self) -> Any:
        return self._client

    def refill(self, bucket: Bucket, identity: str) -> None:
        """Fill a bucket back up (best effort): a successful login clears its account's failed attempts."""
        from redis.exceptions import RedisError

        if self._client is None or self.breaker.is_open:
            return
        try:
            self._client.delete(self.key(bucket, identity))
        except RedisError as exc:  # the bucket stays as drained as it was: stricter, never looser
            logger.warning("could not refill a rate-limit bucket", extra={"bucket": bucket.name, "error": repr(exc)})

    def check(self, checks: Sequence[tuple[Bucket, str]], cost: int = 1) -> Decision:
        """Take `cost` tokens from every (bucket, identity) or from none; one Redis round trip."""
        return self.check_reading(checks, (), cost)[0]

    def check_reading(self, checks: Sequence[tuple[Bucket, str]], read: Sequence[str],
                      cost: int = 1) -> tuple[Decision, list[bytes | None]]:
        """`check`, also returning the values of the keys in `read` (None when absent), in the same round trip.

        Raises LimiterUnavailable; its __cause__ is the RedisError when Redis was asked and did not answer.
        """
        from redis.exceptions import RedisError

        if self._client is None:
            raise LimiterUnavailable("redis is not configured")
        if self.breaker.is_open:
            raise LimiterUnavailable("redis marked down")
        buckets = tuple(bucket for bucket, _ in checks)
        keys = [self.key(bucket, identity) for bucket, identity in checks]
        keys += read
        try:
            raw = self._token_bucket(keys, self._bucket_args(buckets, cost))
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        counts = len(raw) - len(read)
        # An absent key is Lua false: nil over RESP2, but a boolean False to a client speaking RESP3.
        values = [None if v is False else v for v in raw[counts:]]
        return _decide(buckets, [int(v) for v in raw[:counts]]), values

    def _unavailable(self, exc: Exception) -> LimiterUnavailable:
        self.breaker.trip()  # logged once per breaker window, not once per request
        logger.warning("rate limiter cannot reach redis; general buckets fail open, login fails closed",
                       extra={"error": repr(exc), "retry_in_seconds": self.breaker.seconds})
        return LimiterUnavailable(f"{type(exc).__name__}: {exc}")


def _decide(buckets: Sequence[Bucket], raw: Sequence[int]) -> Decision:
    allowed = raw[0] == 1
    states = [(bucket, raw[1 + 3 * i], raw[2 + 3 * i], raw[3 + 3 * i]) for i, bucket in enumerate(buckets)]
    if allowed:
        bucket, remaining, full_ms, wait_ms = min(states, key=lambda s: (s[1] / s[0].capacity, s[1]))
    else:
        bucket, remaining, full_ms, wait_ms = max(states, key=lambda s: s[3])
    return Decision(allowed=allowed, bucket=bucket.name, limit=bucket.capacity, remaining=max(remaining, 0),
                    reset_seconds=math.ceil(full_ms / 1000),
                    retry_after=0 if allowed else max(1, math.ceil(wait_ms / 1000)))


# --- policy: which buckets apply to a request ---------------------------------------------------------------------

LOGIN_ROUTE = ("POST", "/auth/login")
#: Liveness probes must answer even for a throttled client (load balancers, uptime checks). The console's
#: static files too: one page load is ~15 anonymous requests (served from memory), which would spend a quarter
#: of the IP bucket and leave a signed-out user with a half-loaded page; its API calls are limited as usual.
EXEMPT_ROUTES = frozenset({"/health", "/console", "/console/assets/{name}"})


@dataclass(frozen=True)
class Buckets:
    user: Bucket
    ip: Bucket
    login_account: Bucket
    login_account_ip: Bucket
    login_ip: Bucket

    @classmethod
    def from_settings(cls, s: Settings) -> Buckets:
        return cls(
            user=Bucket("user", s.rate_limit_user_capacity, s.rate_limit_user_refill_per_second, fail_open=True),
            ip=Bucket("ip", s.rate_limit_ip_capacity, s.rate_limit_ip_refill_per_second, fail_open=True),
            login_account=Bucket("login-account", s.rate_limit_login_account_capacity,
                                 s.rate_limit_login_account_refill_per_second, fail_open=False),
            login_account_ip=Bucket("login-account-ip", s.rate_limit_login_account_ip_capacity,
                                    s.rate_limit_login_account_ip_refill_per_second, fail_open=False),
            login_ip=Bucket("login-ip", s.rate_limit_login_ip_capacity, s.rate_limit_login_ip_refill_per_second,
                            fail_open=False),
        )


def account_identity(username: str) -> str:
    """The account key part for a name that matches no account: case-insensitive, hashed so key length
    and content stay bounded (a real account is keyed on its id, so its username and email share one budget)."""
    return hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]


def policy(buckets: Buckets, method: str, route: str, *, user_id: str | None,
           client_ip: str | None) -> list[tuple[Bucket, str]]:
    """The (bucket, identity) pairs one request must pass before its view runs; empty when the route is exempt."""
    if route in EXEMPT_ROUTES:
        return []
    ip = client_ip or "unknown"
    if (method, route) == LOGIN_ROUTE:
        return [(buckets.login_ip, ip)]
    if user_id:
        return [(buckets.user, user_id)]
    return [(buckets.ip, ip)]
