"""Two-level cache: L1 in-process LRU, L2 Redis, L3 the caller's loader (Postgres).

Invalidation is global through version tokens kept in Redis:

    {prefix}cache:{ns}:v          namespace token   (bumped by an admin clear)
    {prefix}cache:{ns}:v:{key}    entry token       (bumped when the entity changes)
    {prefix}cache:{ns}:d:{key}    value: b"<ns token>.<entry token>|<expiry ms>|<json>"

Every read first fetches both tokens (one MGET, which also carries the L2 value
when L1 has nothing). An L1 or L2 entry is used only if it was stored under
exactly the current tokens, so a bump in any process makes every other
process's L1 miss on its next read. Tokens are random, never counters: a token
that disappears (Redis restart, eviction, expiry) is replaced by a new random
one, which matches nothing cached before, so losing Redis state can cost misses
but never resurrect an old value.

Ordering that makes this safe: a reader reads the tokens *before* it loads from
the database, and a writer bumps *after* it commits. A reader racing a writer
therefore stores what it loaded under the old tokens, which nobody matches
after the bump.

When Redis cannot be reached the cache is bypassed entirely (never L1 alone:
its entries cannot be validated) and every read goes to the loader. After an
error Redis is skipped for `breaker_seconds` instead of paying a timeout per
request. A bump that fails is kept and retried before this process reads from
the cache again; until it succeeds this process bypasses the cache. If the
writing process never reaches Redis again while Redis keeps its data, other
readers may see the old value until its TTL ends: that residual window is the
documented limit of a cache that must not make writes depend on Redis.

Immutable entries (`fetch(immutable=...)`, e.g. a finished task with its result)
have no entry token to watch: nothing ever changes them. Their L1 hits skip
Redis altogether while this process has seen the namespace token within
`immutable_recheck_seconds` (any read of the namespace refreshes that); past it,
one read checks the tokens as usual. So an admin clear drops the clearing
process's L1 at once and other processes' immutable L1 entries within
`immutable_recheck_seconds` (1 s by default); everything else is as above
(Redis down: bypassed, never served from L1 alone).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from redis.exceptions import RedisError

from chalicelib.cache.lru import LocalLRU
from chalicelib.errors import DependencyUnavailableError
from chalicelib.observability import logger

M = TypeVar("M", bound=BaseModel)


@dataclass
class CacheStats:
    """Counters for tests and metrics. Increments are not locked: approximate under threads."""

    l1_hits: int = 0
    l2_hits: int = 0
    misses: int = 0
    bypasses: int = 0  # Redis unavailable: served by the loader without touching either level


def _token() -> bytes:
    return secrets.token_hex(8).encode()


class TwoLevelCache:
    def __init__(self, redis: Any | None, *, prefix: str, ttls: Mapping[str, int], l1_max_entries: int = 1024,
                 breaker_seconds: float = 5.0, immutable_recheck_seconds: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, l1_max_bytes: int = 8 * 1024 * 1024,
                 l1_max_entry_bytes: int = 256 * 1024) -> None:
        self._redis: Any = redis  # redis.Redis or None (no Redis configured: every read goes to the loader)
        self._prefix = f"{prefix}cache:"
        self.ttls = {str(name): ttl for name, ttl in ttls.items()}
        # Bounded in bytes of the entries' JSON too; an entry over l1_max_entry_bytes lives in L2 only.
        self._l1 = LocalLRU(l1_max_entries, clock, max_bytes=l1_max_bytes, max_entry_bytes=l1_max_entry_bytes)
        self._breaker_seconds = breaker_seconds
        self._clock = clock
        self._down_until = 0.0
        # (namespace, key or None for the whole namespace) -> sequence of bumps that have not reached Redis
        # yet; the sequence lets a flush forget only the requests it actually covered, not one added while it ran.
        self._pending: dict[tuple[str, str | None], int] = {}
        self._seq = 0
        self._pending_lock = threading.Lock()
        self._recheck = immutable_recheck_seconds
        # namespace -> (its token, clock() before the read that saw it): lets immutable L1 hits skip Redis.
        self._ns_seen: dict[str, tuple[bytes, float]] = {}
        self.stats = CacheStats()

    @property
    def namespaces(self) -> tuple[str, ...]:
        return tuple(self.ttls)

    # -- reads --------------------------------------------------------------------------------------

    def fetch(self, namespace: str, key: str, model: type[M], loader: Callable[[], M | None], *,
              cacheable: Callable[[M], bool] | None = None, immutable: Callable[[M], bool] | None = None) -> M | None:
        """The value for `key`: from L1, L2, or `loader()` (then stored unless None or not `cacheable`).

        Values for which `immutable` is true must never change (nobody invalidates them): their L1 hits
        need no Redis read (see the module docstring). Returned models are shared with other readers of
        this process: treat them as read-only.
        """
        ttl = self._ttl(namespace)
        if not self._ready():
            self.stats.bypasses += 1
            return loader()
        l1_key = (namespace, key)
        entry = self._l1.get(l1_key)
        if entry is not None and entry.immutable and self._namespace_seen(namespace, entry.tag):
            self.stats.l1_hits += 1
            return entry.value  # type: ignore[no-any-return]
        ns_key, ver_key, data_key = self._keys(namespace, key)
        checked_at = self._clock()
        try:
            if entry is not None:  # L1 candidate: only the tokens are needed
                ns_tok, ent_tok = self._redis.mget(ns_key, ver_key)
                raw = None
            else:
                ns_tok, ent_tok, raw = self._redis.mget(ns_key, ver_key, data_key)
            if ns_tok is None or ent_tok is None:
                ns_tok, ent_tok, raw = self._init_tokens(ns_key, ver_key, data_key, ns_tok, ent_tok, ttl)
                entry = None
            if ns_tok is None or ent_tok is None:  # expired again between two commands: don't guess
                self.stats.bypasses += 1
                return loader()
            tag = ns_tok + b"." + ent_tok
            self._ns_seen[namespace] = (ns_tok, checked_at)
            if entry is not None:
                if entry.tag == tag:
                    self.stats.l1_hits += 1
                    return entry.value  # type: ignore[no-any-return]
                raw = self._redis.get(data_key)  # L1 was stale: L2 may hold the new generation
        except RedisError as exc:
            self._trip(exc)
            self.stats.bypasses += 1
            return loader()

        value = self._decode(raw, tag, model)
        if value is not None:
            self.stats.l2_hits += 1
            self._l1.put(l1_key, tag, value[0], value[1], immutable=immutable is not None and immutable(value[0]),
                         size=value[2])
            return value[0]

        self.stats.misses += 1
        loaded = loader()
        if loaded is not None and (cacheable is None or cacheable(loaded)):
            self._store(l1_key, data_key, tag, loaded, ttl, immutable is not None and immutable(loaded))
        return loaded

    def _namespace_seen(self, namespace: str, tag: bytes) -> bool:
        """True when `tag` was stored under the namespace token this process read less than the recheck ago."""
        seen = self._ns_seen.get(namespace)
        return seen is not None and self._clock() - seen[1] < self._recheck and tag.startswith(seen[0] + b".")

    def _decode(self, raw: bytes | None, tag: bytes, model: type[M]) -> tuple[M, float, int] | None:
        """(value, seconds left, its JSON's size) when `raw` was stored under `tag` and has not expired."""
        if raw is None:
            return None
        head, _, rest = raw.partition(b"|")
        if head != tag:
            return None
        expiry_ms, _, body = rest.partition(b"|")
        try:
            left = int(expiry_ms) / 1000 - time.time()
            value = model.model_validate_json(body)
        except (ValueError, PydanticValidationError):
            return None  # written by an incompatible deploy: a miss, not an error
        return (value, left, len(body)) if left > 0 else None

    def _store(self, l1_key: tuple[str, str], data_key: str, tag: bytes, value: BaseModel, ttl: int,
               immutable: bool) -> None:
        expiry_ms = int((time.time() + ttl) * 1000)
        body = value.model_dump_json().encode()
        payload = b"%s|%d|%s" % (tag, expiry_ms, body)
        try:
            self._redis.set(data_key, payload, ex=ttl)
        except RedisError as exc:
            self._trip(exc)
            return
        self._l1.put(l1_key, tag, value, ttl, immutable=immutable, size=len(body))

    def _init_tokens(self, ns_key: str, ver_key: str, data_key: str, ns_tok: bytes | None, ent_tok: bytes | None,
                     ttl: int) -> tuple[bytes | None, bytes | None, bytes | None]:
        """Create missing tokens (NX: a concurrent writer's bump wins) and read back what is current."""
        pipe = self._redis.pipeline(transaction=False)
        if ns_tok is None:
            pipe.set(ns_key, _token(), nx=True)
        if ent_tok is None:
            pipe.set(ver_key, _token(), nx=True, ex=self._token_ttl(ttl))
        pipe.mget(ns_key, ver_key, data_key)
        current = pipe.execute()[-1]
        return current[0], current[1], current[2]

    # -- invalidation -------------------------------------------------------------------------------

    def invalidate(self, namespace: str, key: str) -> None:
        """Make every process miss `key` from now on. Call after the change is committed.

        Never raises: if Redis cannot be reached the bump is kept and retried (see the module docstring).
        """
        self._ttl(namespace)
        self._l1.discard((namespace, key))
        self._bump(namespace, key)

    def invalidate_namespace(self, namespace: str) -> None:
        """Like `clear` for one namespace, but never raises (for callers that already committed)."""
        self._ttl(namespace)
        self._ns_seen.pop(namespace, None)
        self._l1.discard_where(lambda k: isinstance(k, tuple) and k[0] == namespace)
        self._bump(namespace, None)

    def _bump(self, namespace: str, key: str | None) -> None:
        if self._redis is None:
            return
        with self._pending_lock:
            self._seq += 1
            self._pending[(namespace, key)] = self._seq
        if self._clock() >= self._down_until:
            self._flush_pending()

    def clear(self, namespaces: Iterable[str] | None = None) -> list[str]:
        """Bump namespace tokens: every L1 and L2 entry of these namespaces misses from now on.

        Raises DependencyUnavailableError when Redis cannot be reached (nothing was cleared).
        """
        names = list(dict.fromkeys(namespaces)) if namespaces is not None else list(self.ttls)
        for name in names:
            self._ttl(name)
        self._l1.discard_where(lambda k: isinstance(k, tuple) and k[0] in names)
        if self._redis is None:
            return names
        try:
            pipe = self._redis.pipeline(transaction=False)
            for name in names:
                pipe.set(self._keys(name, "")[0], _token())
            pipe.execute()
            for name in names:  # after the write: a read racing the clear cannot re-confirm the old token
                self._ns_seen.pop(name, None)
        except RedisError as exc:
            self._trip(exc)
            raise DependencyUnavailableError("the cache store is unreachable; nothing was cleared",
                                             {"dependency": "redis"}) from exc
        return names

    def _flush_pending(self) -> bool:
        with self._pending_lock:
            bumps = dict(self._pending)
        if not bumps:
            return True
        try:
            pipe = self._redis.pipeline(transaction=False)
            for namespace, key in bumps:
                ns_key, ver_key, data_key = self._keys(namespace, key or "")
                if key is None:
                    pipe.set(ns_key, _token())
                    continue
                pipe.set(ver_key, _token(), ex=self._token_ttl(self.ttls[namespace]))
                pipe.delete(data_key)  # could never match again anyway; frees the memory now
            pipe.execute()
        except RedisError as exc:
            self._trip(exc)
            return False
        with self._pending_lock:
            for bump, seq in bumps.items():
                if self._pending.get(bump) == seq:
                    del self._pending[bump]
        return True

    # -- plumbing -----------------------------------------------------------------------------------

    def _ready(self) -> bool:
        if self._redis is None or self._clock() < self._down_until:
            return False
        return not self._pending or self._flush_pending()

    def _trip(self, exc: Exception) -> None:
        self._down_until = self._clock() + self._breaker_seconds
        logger.warning("cache bypassed: redis unavailable", extra={"error": type(exc).__name__,
                                                                  "retry_in_s": self._breaker_seconds})

    def _ttl(self, namespace: str) -> int:
        try:
            return self.ttls[namespace]
        except KeyError:
            raise ValueError(f"unknown cache namespace {namespace!r}") from None

    @staticmethod
    def _token_ttl(ttl: int) -> int:
        # Outlives any value stored under it; if it expires anyway the next reader mints a new one (a miss).
        return 2 * ttl

    def _keys(self, namespace: str, key: str) -> tuple[str, str, str]:
        base = f"{self._prefix}{namespace}:"
        return f"{base}v", f"{base}v:{key}", f"{base}d:{key}"
