"""The per-request session check: is this (signature-valid) access token still good *now*?

A token dies before its `exp` when its jti is denylisted (logout), its family
is revoked (logout, refresh-token reuse), its user is deactivated or its
`ver` is older than the user's token version (password change, deactivation).

Hot path: ONE Redis round trip (MGET of the denylist key, the family key and
the cached user state), which the HTTP middleware has the rate limiter's script
read when it can (`lookup_keys`/`interpret`, see chalicelib.api.identity): then
the check itself costs no round trip of its own.
A cache miss adds one Postgres read and a SET NX.

The family key has three states: "1" revoked, "0" known live (Postgres said
so, cached for `family_ttl`), absent. Absent is NOT "live": it is what Redis
shows after a restart, a flush, an eviction or a failed revocation write, so
the family's revocation is read from Postgres (the same query as the user's
state) and the answer cached. Postgres is the record of every revoked family
(logout and reuse revoke there; see refresh_tokens.lock_family for why no
member is ever added to a revoked family), so losing Redis loses no revocation.
Redis down (or the breaker open): the user's state AND the family's
revocation are read from Postgres on every request, so an outage never turns
into a stale allow. Only a token outside any family (minted by a tool, not by
login) relies on its denylist key alone, and logout refuses (503) rather than
go unrecorded.

Cache coherence with writers (admin deactivates, password change): before
committing, the writer parks a tombstone on the user's key (readers then go to
Postgres and do not cache); after committing it overwrites the key with the
new state. Readers fill the cache with SET NX only, so a reader that loaded
the old row just before the commit can never put it back.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import exists, select

from chalicelib.auth.tokens import INVALID_TOKEN, Claims
from chalicelib.db.models import RefreshToken, User
from chalicelib.db.session import Database
from chalicelib.errors import AuthenticationError, DependencyUnavailableError
from chalicelib.observability import logger
from chalicelib.ratelimit import Breaker

TOMBSTONE = b"-"
FAMILY_REVOKED = b"1"
FAMILY_LIVE = b"0"

#: told that sessions of a user ended, to close what was opened with them (its WebSocket connections):
#: (user id, revoked families, or a token version below which every token is dead); must not raise.
SessionsEnded = Callable[[uuid.UUID, tuple[str, ...], int | None], None]


@dataclass(frozen=True)
class UserState:
    """What the per-request check needs to know about a user, and nothing else."""

    active: bool
    role: str
    version: int

    def encode(self) -> str:
        return f"{int(self.active)}|{self.role}|{self.version}"

    @classmethod
    def decode(cls, raw: bytes) -> UserState | None:
        try:
            active, role, version = raw.decode().split("|")
            return cls(active == "1", role, int(version))
        except (UnicodeDecodeError, ValueError):
            return None

    @classmethod
    def of(cls, user: User) -> UserState:
        return cls(bool(user.is_active), user.role, int(user.token_version))


@dataclass(frozen=True)
class Lookup:
    """What Redis said about one token: read by `check`, or prefetched along with the rate limit."""

    reachable: bool  # Redis answered: present denylist/family keys are authoritative
    denied: bool = False
    state: UserState | None = None
    cacheable: bool = False  # a miss that may be filled (no writer's tombstone)
    family_live: bool = False  # the family key said "live"; False: absent (or no family), ask Postgres


class SessionGuard:
    def __init__(self, db: Database, redis: Any, *, key_prefix: str, state_ttl: int, access_ttl: int,
                 breaker_seconds: float = 5.0, family_ttl: int = 60) -> None:
        self.db = db
        self.redis = redis
        self.prefix = f"{key_prefix}auth:"
        self.state_ttl = state_ttl
        self.access_ttl = access_ttl
        self.family_ttl = family_ttl
        self.breaker = Breaker(breaker_seconds)

    # --- keys -------------------------------------------------------------------------------------------------

    def deny_key(self, jti: str) -> str:
        return f"{self.prefix}deny:{jti}"

    def family_key(self, family: str) -> str:
        return f"{self.prefix}fam:{family}"

    def user_key(self, user_id: uuid.UUID | str) -> str:
        """The user's state key; `user_id` as a UUID or its text (`Claims.subject`, computed once per token)."""
        return f"{self.prefix}user:{user_id}"

    # --- the per-request check --------------------------------------------------------------------------------

    def check(self, claims: Claims, prefetched: Lookup | None = None) -> Claims:
        """Return the claims with the user's *current* role, or raise the generic 401.

        `prefetched`: this request's lookup, already read from Redis (`lookup_keys` + `interpret`).
        """
        found = prefetched if prefetched is not None else self._lookup(claims)
        if found.denied:
            raise AuthenticationError(INVALID_TOKEN)
        state = found.state
        family = claims.family if claims.family and not found.family_live else None
        if state is None or family is not None:
            loaded, family_revoked = self._load(claims.user_id, family)
            if found.reachable:
                self._remember(claims.user_id, loaded if found.cacheable else None, family, family_revoked)
            if family_revoked:
                raise AuthenticationError(INVALID_TOKEN)
            state = loaded
        if state is None or not state.active or state.version != claims.version:
            raise AuthenticationError(INVALID_TOKEN)
        return claims if state.role == claims.role else replace(claims, role=state.role)

    def shares(self, client: Any) -> bool:
        """Whether another component's call on `client` may read the lookup: same Redis, not marked down."""
        return self.redis is not None and self.redis is client and not self.breaker.is_open

    def lookup_keys(self, claims: Claims) -> list[str]:
        """The keys one token's lookup reads (user state first); their values go to `interpret`."""
        keys = [self.user_key(claims.subject), self.deny_key(claims.jti)]
        if claims.family:
            keys.append(self.family_key(claims.family))
        return keys

    def _lookup(self, claims: Claims) -> Lookup:
        if self.redis is None or self.breaker.is_open:
            return Lookup(reachable=False)
        try:
            values = self.redis.mget(self.lookup_keys(claims))
        except RedisError as exc:
            return self.unreachable(exc)
        return self.interpret(values)

    def unreachable(self, exc: Exception) -> Lookup:
        """Redis failed to answer the lookup: skip it for the breaker window and check Postgres instead."""
        self.breaker.trip()
        logger.warning("session cache unavailable, checking Postgres", extra={"error": type(exc).__name__})
        return Lookup(reachable=False)

    def interpret(self, values: Any) -> Lookup:
        """The values of `lookup_keys` (user state, then the revocation keys) as a lookup."""
        raw_state, denied, *family = values
        family_live = bool(family) and family[0] == FAMILY_LIVE
        if denied is not None or (family and family[0] is not None and not family_live):
            return Lookup(reachable=True, denied=True)
        if raw_state is None:
            return Lookup(reachable=True, cacheable=True, family_live=family_live)
        if raw_state == TOMBSTONE:
            return Lookup(reachable=True, family_live=family_live)
        return Lookup(reachable=True, state=UserState.decode(raw_state), family_live=family_live)

    def _load(self, user_id: uuid.UUID, family: str | None) -> tuple[UserState | None, bool]:
        """The user's state from Postgres; with `family`, also whether that family is revoked (one query)."""
        columns: list[Any] = [User.is_active, User.role, User.token_version]
        if family is not None:
            try:
                family_id = uuid.UUID(family)
            except ValueError as exc:
                raise AuthenticationError(INVALID_TOKEN) from exc
            columns.append(exists().where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_not(None)))
        with self.db.read() as session:
            row = session.execute(select(*columns).where(User.id == user_id)).one_or_none()
        if row is None:
            return None, False
        return UserState(bool(row[0]), str(row[1]), int(row[2])), bool(family is not None and row[3])

    def _remember(self, user_id: uuid.UUID, state: UserState | None, family: str | None, revoked: bool) -> None:
        """Fill the cache from what Postgres said (one round trip). NX for "alive"/"live" answers, so a
        writer's tombstone or revocation set meanwhile is never overwritten by this older read."""
        if state is None and family is None:
            return
        pipe = self.redis.pipeline(transaction=False)
        if state is not None:
            pipe.set(self.user_key(user_id), state.encode(), ex=self.state_ttl, nx=True)
        if family is not None:
            if revoked:
                pipe.set(self.family_key(family), FAMILY_REVOKED, ex=self.access_ttl + 1)
            else:
                pipe.set(self.family_key(family), FAMILY_LIVE, ex=self.family_ttl, nx=True)
        try:
            pipe.execute()
        except RedisError as exc:
            self.breaker.trip()
            logger.warning("could not cache session state", extra={"error": type(exc).__name__})

    # --- writers ----------------------------------------------------------------------------------------------

    def begin_change(self, user_id: uuid.UUID) -> None:
        """Call inside the writer's transaction, before commit. Redis unreachable: refuse the change (503)
        rather than commit one that a cached "active" entry could hide for up to the cache TTL."""
        if self.redis is None:
            return
        try:
            self.redis.set(self.user_key(user_id), TOMBSTONE, ex=self.state_ttl)
        except RedisError as exc:
            raise DependencyUnavailableError("sessions cannot be updated right now; try again",
                                             {"dependency": "redis"}) from exc

    def publish(self, user_id: uuid.UUID, state: UserState | None) -> None:
        """After commit: the new state replaces the tombstone (None: drop the tombstone, nothing changed)."""
        if self.redis is None:
            return
        try:
            if state is None:
                self.redis.delete(self.user_key(user_id))
            else:
                self.redis.set(self.user_key(user_id), state.encode(), ex=self.state_ttl)
        except RedisError as exc:
            # The tombstone stays: readers keep going to Postgres until it expires. Still correct.
            logger.warning("could not publish session state", extra={"error": type(exc).__name__})

    def revoke(self, *, jti: str | None = None, expires_at: datetime | None = None,
               families: tuple[str, ...] = (), strict: bool = True) -> None:
        """Denylist an access token until its exp and mark families revoked for an access-token lifetime
        (no token of a revoked family can be minted after it, so none outlives that)."""
        if self.redis is None:
            return
        pipe = self.redis.pipeline(transaction=False)
        if jti is not None and expires_at is not None:
            remaining = int((expires_at - datetime.now(timezone.utc)).total_seconds()) + 1
            pipe.set(self.deny_key(jti), b"1", ex=max(remaining, 1))
        for family in families:
            pipe.set(self.family_key(family), FAMILY_REVOKED, ex=self.access_ttl + 1)
        try:
            pipe.execute()
        except RedisError as exc:
            if strict:
                raise DependencyUnavailableError("sessions cannot be revoked right now; try again",
                                                 {"dependency": "redis"}) from exc
            logger.warning("could not record revoked families", extra={"error": type(exc).__name__})
