"""The WebSocket connection index, in Redis (ARCHITECTURE.md: Redis holds what can be rebuilt).

Why Redis and not Postgres: every event delivery reads it (one HGETALL per user with pending
events), connects and disconnects write it, and losing it costs nothing a client does not repair
itself — a client whose connection is forgotten gets no pushes, its next reconnect (with
`last_event_id`) re-registers it and replays what it missed. Postgres would add a write per
connect/disconnect to the database every task already writes to, for data with a 2-hour life.

Keys (prefix = settings.redis_key_prefix):
- `<prefix>ws:user:<user_id>`  hash: connection_id -> JSON {"subscription", "connected_at", "replay_after"}
- `<prefix>ws:conn:<connection_id>`  the connection's user id (messages and disconnects carry only the id)
- `<prefix>ws:closing:<user_id>`  set of the user's connection ids whose session ended (logout, refresh-token
  reuse, password change, deactivation): nothing more is sent to them and the notifier closes them
- `<prefix>ws:replay`  set of user ids with a connection waiting for the notifier: a replay, or a close
The per-user and per-connection keys expire after API Gateway's maximum connection duration (2 h) plus a margin,
so a connection whose $disconnect never arrived cannot hold a slot of the user's cap for ever.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

#: API Gateway closes every WebSocket connection after 2 hours.
MAX_CONNECTION_SECONDS = 2 * 3600
KEY_TTL_SECONDS = MAX_CONNECTION_SECONDS + 300


@dataclass(frozen=True)
class Subscription:
    """What a connection wants: every event of its user, or only these tasks / runs / types.

    Resource filters (task_ids, run_ids) are alternatives — an event passes if it is about one of the
    listed tasks OR belongs to one of the listed runs; `types` then narrows whatever passed."""

    task_ids: frozenset[str] = field(default_factory=frozenset)
    run_ids: frozenset[str] = field(default_factory=frozenset)
    types: frozenset[str] = field(default_factory=frozenset)

    def matches(self, event: dict[str, Any]) -> bool:
        if self.task_ids or self.run_ids:
            resource = event.get("resource") or {}
            about_task = resource.get("type") == "task" and str(resource.get("id")) in self.task_ids
            in_run = event.get("run_id") is not None and str(event.get("run_id")) in self.run_ids
            if resource.get("type") == "run" and str(resource.get("id")) in self.run_ids:
                in_run = True
            if not (about_task or in_run):
                return False
        return not self.types or str(event.get("type")) in self.types

    def to_json(self) -> dict[str, list[str]]:
        return {"task_ids": sorted(self.task_ids), "run_ids": sorted(self.run_ids), "types": sorted(self.types)}

    @classmethod
    def from_json(cls, raw: dict[str, Any] | None) -> Subscription:
        raw = raw or {}
        return cls(frozenset(raw.get("task_ids") or ()), frozenset(raw.get("run_ids") or ()),
                   frozenset(raw.get("types") or ()))


@dataclass(frozen=True)
class Connection:
    connection_id: str
    subscription: Subscription
    connected_at: float
    #: set until the notifier has replayed the events after it (the client's `last_event_id`).
    replay_after: int | None = None
    #: the last event id the replay sent: live delivery skips events up to it (no duplicate after a replay).
    seen_through: int = 0
    #: the session (refresh-token family) and token version of the access token it connected with: a logout of
    #: that session, a password change or a deactivation ends the connection too.
    family: str | None = None
    version: int = 0
    #: its session ended: nothing more is sent to it, and the notifier closes it (not stored in the hash).
    closing: bool = False

    def encode(self) -> str:
        return json.dumps({"subscription": self.subscription.to_json(), "connected_at": self.connected_at,
                           "replay_after": self.replay_after, "seen_through": self.seen_through,
                           "family": self.family, "version": self.version})

    @classmethod
    def decode(cls, connection_id: str, raw: bytes | str) -> Connection | None:
        try:
            data = json.loads(raw)
            after = data.get("replay_after")
            family = data.get("family")
            return cls(connection_id, Subscription.from_json(data.get("subscription")), float(data["connected_at"]),
                       int(after) if after is not None else None, int(data.get("seen_through") or 0),
                       str(family) if family is not None else None, int(data.get("version") or 0))
        except (ValueError, TypeError, KeyError, AttributeError):
            return None

    def ended_by(self, families: frozenset[str], below_version: int | None) -> bool:
        """Whether a session change ends this connection: its family was revoked, or tokens older than
        `below_version` no longer count (password change, deactivation)."""
        return (self.family is not None and self.family in families) or (
            below_version is not None and self.version < below_version)


class ConnectionIndex:
    def __init__(self, redis: Any, key_prefix: str, *, clock: Any = time.time) -> None:
        self.redis = redis
        self.prefix = f"{key_prefix}ws:"
        self._clock = clock

    def user_key(self, user_id: uuid.UUID | str) -> str:
        return f"{self.prefix}user:{user_id}"

    def conn_key(self, connection_id: str) -> str:
        return f"{self.prefix}conn:{connection_id}"

    def closing_key(self, user_id: uuid.UUID | str) -> str:
        return f"{self.prefix}closing:{user_id}"

    @property
    def replay_key(self) -> str:
        return f"{self.prefix}replay"

    def add(self, user_id: uuid.UUID, connection_id: str, cap: int, replay_after: int | None = None, *,
            family: str | None = None, version: int = 0) -> bool:
        """Register a connection unless the user already holds `cap` live ones. Add-then-count, so two
        racing connects can both be refused but the cap is never exceeded."""
        key = self.user_key(user_id)
        self._prune(key)
        conn = Connection(connection_id, Subscription(), self._clock(), replay_after, family=family, version=version)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, connection_id, conn.encode())
        pipe.expire(key, KEY_TTL_SECONDS)
        pipe.hlen(key)
        count = pipe.execute()[-1]
        if int(count) > cap:
            self.redis.hdel(key, connection_id)
            return False
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self.conn_key(connection_id), str(user_id), ex=KEY_TTL_SECONDS)
        if replay_after is not None:
            pipe.sadd(self.replay_key, str(user_id))
        pipe.execute()
        return True

    def _prune(self, key: str) -> None:
        """Drop entries older than API Gateway's connection limit (their $disconnect was lost)."""
        oldest = self._clock() - MAX_CONNECTION_SECONDS
        stale = [cid for cid, raw in self.redis.hgetall(key).items()
                 if (c := Connection.decode(redis_text(cid), raw)) is None or c.connected_at < oldest]
        if stale:
            self.redis.hdel(key, *stale)

    def user_of(self, connection_id: str) -> str | None:
        raw = self.redis.get(self.conn_key(connection_id))
        return redis_text(raw) if raw is not None else None

    def get(self, user_id: uuid.UUID | str, connection_id: str) -> Connection | None:
        raw = self.redis.hget(self.user_key(user_id), connection_id)
        return Connection.decode(connection_id, raw) if raw is not None else None

    def subscribe(self, connection_id: str, subscription: Subscription) -> bool:
        """Replace the connection's subscription; False when the connection is unknown (gone)."""
        user_id = self.user_of(connection_id)
        current = self.get(user_id, connection_id) if user_id else None
        if user_id is None or current is None:
            return False
        updated = replace(current, subscription=subscription)
        self.redis.hset(self.user_key(user_id), connection_id, updated.encode())
        return True

    def replayed(self, user_id: uuid.UUID | str, connection_id: str, through: int) -> None:
        """The connection's replay is done (it sent events up to `through`): from now on it gets live events."""
        current = self.get(user_id, connection_id)
        if current is not None:
            done = replace(current, replay_after=None, seen_through=through)
            self.redis.hset(self.user_key(user_id), connection_id, done.encode())

    def remove(self, connection_id: str, user_id: uuid.UUID | str | None = None) -> None:
        owner = user_id if user_id is not None else self.user_of(connection_id)
        pipe = self.redis.pipeline(transaction=False)
        if owner is not None:
            pipe.hdel(self.user_key(owner), connection_id)
            pipe.srem(self.closing_key(owner), connection_id)
        pipe.delete(self.conn_key(connection_id))
        pipe.execute()

    def connections(self, user_id: uuid.UUID | str) -> list[Connection]:
        """The user's connections, those whose session ended marked `closing` (one round trip)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.user_key(user_id))
        pipe.smembers(self.closing_key(user_id))
        entries, closing = pipe.execute()
        ended = {redis_text(c) for c in closing}
        found = []
        for cid, raw in entries.items():
            conn = Connection.decode(redis_text(cid), raw)
            if conn is not None:
                found.append(replace(conn, closing=True) if conn.connection_id in ended else conn)
        return found

    def end_sessions(self, user_id: uuid.UUID | str, families: Iterable[str] = (),
                     below_version: int | None = None) -> list[str]:
        """Mark the user's connections that a session change ends (`Connection.ended_by`) as closing and ask the
        notifier to close them (the `replay` set: it attends to the user on its next round). Returns their ids.
        A separate set, not a field of the hash entry: a subscribe racing with this cannot clear the mark."""
        revoked = frozenset(families)
        ended = [c.connection_id for c in self.connections(user_id)
                 if not c.closing and c.ended_by(revoked, below_version)]
        if ended:
            pipe = self.redis.pipeline(transaction=False)
            pipe.sadd(self.closing_key(user_id), *ended)
            pipe.expire(self.closing_key(user_id), KEY_TTL_SECONDS)
            pipe.sadd(self.replay_key, str(user_id))
            pipe.execute()
        return ended

    def request_replay(self, user_id: uuid.UUID | str) -> None:
        self.redis.sadd(self.replay_key, str(user_id))

    def take_replays(self) -> list[str]:
        """User ids with a connection waiting for its replay (removed from the set: the caller replays)."""
        members = self.redis.spop(self.replay_key, 1000) or []
        return [redis_text(m) for m in members]


def redis_text(value: Any) -> Any:
    """A Redis reply's bytes as text (a client without decode_responses answers bytes); anything else as it is."""
    return value.decode() if isinstance(value, bytes) else value
