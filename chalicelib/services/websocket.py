"""WebSocket sessions: who may connect, what a connection asks for, and leaving (docs/websocket.md).

The handlers in chalicelib/api/websocket.py parse API Gateway's events and call this; delivery itself
is the notifier's (chalicelib.events.websocket_sink).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from chalicelib import errors
from chalicelib.auth.guard import SessionGuard
from chalicelib.auth.tokens import ACCESS, TokenService
from chalicelib.events.connections import ConnectionIndex, Subscription

#: the subprotocol a client offers with its token (`Sec-WebSocket-Protocol: ymera, bearer.<token>`);
#: the server answers with it, never with the token.
SUBPROTOCOL = "ymera"
TOKEN_PROTOCOL_PREFIX = "bearer."
#: ids / types one subscribe message may list.
MAX_FILTER_ITEMS = 100
FILTERS = ("task_ids", "run_ids", "types")


@dataclass(frozen=True)
class Accepted:
    user_id: uuid.UUID
    #: echo this subprotocol in the handshake (the client offered it), or None.
    subprotocol: str | None


def token_from(query: Mapping[str, str] | None, headers: Mapping[str, str] | None) -> tuple[str | None, bool]:
    """(the access token, whether it came as a subprotocol). Query `token` first (browsers), then
    `Sec-WebSocket-Protocol: ymera, bearer.<token>`."""
    token = (query or {}).get("token")
    if token:
        return token, False
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    for item in str(lowered.get("sec-websocket-protocol") or "").split(","):
        item = item.strip()
        if item.startswith(TOKEN_PROTOCOL_PREFIX) and len(item) > len(TOKEN_PROTOCOL_PREFIX):
            return item[len(TOKEN_PROTOCOL_PREFIX):], True
    return None, False


def parse_subscription(message: Any) -> Subscription:
    """A `{"action": "subscribe", "task_ids"|"run_ids"|"types": [...]}` message -> Subscription (422 otherwise).
    Listing nothing subscribes to everything again."""
    if not isinstance(message, dict):
        raise errors.ValidationError("a message is a JSON object with an action")
    unknown = set(message) - {"action", *FILTERS}
    if unknown:
        raise errors.ValidationError(f"unknown fields: {', '.join(sorted(unknown))}")
    values: dict[str, frozenset[str]] = {}
    for name in FILTERS:
        raw = message.get(name) or []
        if not isinstance(raw, list) or not all(isinstance(v, str) and 0 < len(v) <= 64 for v in raw):
            raise errors.ValidationError(f"{name} must be a list of strings")
        if len(raw) > MAX_FILTER_ITEMS:
            raise errors.ValidationError(f"{name} lists at most {MAX_FILTER_ITEMS} items")
        if name != "types":
            for value in raw:
                try:
                    uuid.UUID(value)
                except ValueError as exc:
                    raise errors.ValidationError(f"{name} must hold UUIDs") from exc
        values[name] = frozenset(raw)
    return Subscription(values["task_ids"], values["run_ids"], values["types"])


class WebSocketService:
    def __init__(self, tokens: TokenService, sessions: SessionGuard, index: Callable[[], ConnectionIndex], *,
                 max_per_user: int, wake_notifier: Callable[[uuid.UUID], None] | None = None) -> None:
        self.tokens = tokens
        self.sessions = sessions
        self._index = index
        self.max_per_user = max_per_user
        self._wake = wake_notifier

    @property
    def index(self) -> ConnectionIndex:
        return self._index()

    def connect(self, connection_id: str, query: Mapping[str, str] | None,
                headers: Mapping[str, str] | None) -> Accepted:
        """Authenticate and register a connection. AuthenticationError (401): no, bad, expired or revoked
        token (logout, deactivation: the same per-request check as the REST API); ValidationError (422): a bad
        `last_event_id`; RateLimitedError (429): the user already holds `max_per_user` connections."""
        token, as_protocol = token_from(query, headers)
        if token is None:
            raise errors.AuthenticationError("missing access token (query parameter `token`)")
        claims = self.sessions.check(self.tokens.verify(token, ACCESS))
        raw_after = (query or {}).get("last_event_id")
        after: int | None = None
        if raw_after not in (None, ""):
            try:
                after = int(str(raw_after))
            except ValueError as exc:
                raise errors.ValidationError("last_event_id must be an event id (an integer >= 0)") from exc
            if after < 0:
                raise errors.ValidationError("last_event_id must be an event id (an integer >= 0)")
        if not self.index.add(claims.user_id, connection_id, self.max_per_user, replay_after=after,
                              family=claims.family, version=claims.version):
            raise errors.RateLimitedError(f"at most {self.max_per_user} connections per user", retry_after=5)
        if after is not None and self._wake is not None:
            self._wake(claims.user_id)
        return Accepted(claims.user_id, SUBPROTOCOL if as_protocol else None)

    def message(self, connection_id: str, message: Any) -> dict[str, Any]:
        """Handle one client message; returns the reply to send back on the connection."""
        action = message.get("action") if isinstance(message, dict) else None
        if action == "ping":
            return {"type": "ws.pong"}
        if action != "subscribe":
            raise errors.ValidationError("unknown action (expected \"subscribe\" or \"ping\")")
        subscription = parse_subscription(message)
        if not self.index.subscribe(connection_id, subscription):
            raise errors.NotFoundError("connection not registered (reconnect)")
        return {"type": "ws.subscribed", "subscription": subscription.to_json()}

    def disconnect(self, connection_id: str) -> None:
        self.index.remove(connection_id)

    def end_sessions(self, user_id: uuid.UUID, families: tuple[str, ...] = (),
                     below_version: int | None = None) -> int:
        """A session change (logout of `families`; a password change or deactivation: tokens below
        `below_version`) ends the connections opened with those sessions: marked now (nothing more is sent to
        them), closed by the notifier, which this wakes. Returns how many were ended."""
        ended = self.index.end_sessions(user_id, families, below_version)
        if ended and self._wake is not None:
            self._wake(user_id)
        return len(ended)
