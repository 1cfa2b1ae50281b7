"""WebSocketSink: the notifier's delivery to API Gateway WebSocket connections.

Each event goes to every connection of its user whose subscription matches, as one text message
(the event's JSON, `chalicelib.events.ledger.Event.to_json`), through the API Gateway Management
API (`post_to_connection`). A `GoneException` means the client is gone: its index entry is removed.
Any other failure is logged and skipped — a dead or slow connection never holds back the user's
cursor (or the webhooks behind it); the client catches up by reconnecting with `last_event_id`.

A connection whose session ended (logout, refresh-token reuse, password change, deactivation: marked by
`ConnectionIndex.end_sessions`) is sent nothing more; the notifier closes it (`delete_connection`) on its next
round, woken by the API, and at the latest when an event of its user comes.

A connection that connected with `last_event_id` first gets the events after it, read from the
ledger (`replay`), before any live event; its entry remembers the last id it was sent so the live
path does not send those again.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from chalicelib.events.connections import Connection, ConnectionIndex
from chalicelib.observability import logger

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from chalicelib.events.ledger import Event

#: events read per ledger page while replaying.
REPLAY_PAGE = 200


def wire(event: Event) -> tuple[dict[str, Any], str]:
    body = event.to_json()
    return body, json.dumps(body, separators=(",", ":"), default=str)


def control(kind: str, **fields: Any) -> str:
    """A message from the gateway side that is not an event (`type` starts with "ws.")."""
    return json.dumps({"type": f"ws.{kind}", **fields}, separators=(",", ":"), default=str)


class WebSocketSink:
    def __init__(self, index: ConnectionIndex, client: Callable[[], Any], *, replay_max: int = 1000,
                 list_after: Callable[[Session, uuid.UUID, int, int], list[Event]] | None = None) -> None:
        self.index = index
        self._client = client
        self.replay_max = replay_max
        self._list_after = list_after
        self.sent = 0
        self.gone = 0
        self.closed = 0

    # --- the EventSink protocol -------------------------------------------------------------------------------

    def deliver(self, session: Session, user_id: uuid.UUID, events: Sequence[Event]) -> None:
        connections = self.index.connections(user_id)
        if not connections:
            return
        live = []
        for conn in connections:
            if conn.closing:
                self.close(conn.connection_id, user_id)
                continue
            ready = self._replay_one(session, user_id, conn) if conn.replay_after is not None else conn
            if ready is not None:
                live.append(ready)
        for event in events:
            body, text = wire(event)
            for conn in live:
                if event.event_id > conn.seen_through and conn.subscription.matches(body):
                    self.post(conn.connection_id, text, user_id)

    # --- replay at connect -----------------------------------------------------------------------------------

    def replay(self, session: Session, user_id: uuid.UUID) -> int:
        """Close the user's connections whose session ended, and replay to every other one still waiting for its
        replay; returns connections replayed."""
        done = 0
        for conn in self.index.connections(user_id):
            if conn.closing:
                self.close(conn.connection_id, user_id)
            elif conn.replay_after is not None:
                self._replay_one(session, user_id, conn)
                done += 1
        return done

    def _replay_one(self, session: Session, user_id: uuid.UUID, conn: Connection) -> Connection | None:
        list_after = self._list_after or _ledger_list_after()
        after = conn.replay_after or 0
        sent = 0
        last = after
        while sent < self.replay_max:
            page = list_after(session, user_id, last, min(REPLAY_PAGE, self.replay_max - sent))
            if not page:
                break
            for event in page:
                body, text = wire(event)
                if conn.subscription.matches(body) and not self.post(conn.connection_id, text, user_id):
                    return None  # gone: removed from the index
                last = event.event_id
            sent += len(page)
        if sent >= self.replay_max and list_after(session, user_id, last, 1):
            # More were missed than a replay sends: the client pages the rest with GET /events?after=.
            self.post(conn.connection_id, control("replay_truncated", last_event_id=last), user_id)
        self.index.replayed(user_id, conn.connection_id, last)
        return replace(conn, replay_after=None, seen_through=last)

    # --- posting -----------------------------------------------------------------------------------------------

    def post(self, connection_id: str, text: str, user_id: uuid.UUID | str | None = None) -> bool:
        """Send one message; False when the connection is gone (and now removed) or the post failed."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = self._client()
        try:
            client.post_to_connection(ConnectionId=connection_id, Data=text.encode())
        except client.exceptions.GoneException:
            self.index.remove(connection_id, user_id)
            self.gone += 1
            return False
        except (ClientError, BotoCoreError) as exc:  # one connection's failure must not stop the others
            logger.warning("websocket post failed", extra={"connection_id": connection_id,
                                                           "error": type(exc).__name__})
            return False
        self.sent += 1
        return True


    def close(self, connection_id: str, user_id: uuid.UUID | str) -> bool:
        """Close a connection whose session ended (API Gateway sends the client a close frame and runs
        $disconnect). False when the close failed: it stays marked, and the next round or event tries again."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = self._client()
        try:
            client.delete_connection(ConnectionId=connection_id)
        except client.exceptions.GoneException:
            pass  # already gone: only the index entry is left to remove
        except (ClientError, BotoCoreError) as exc:
            logger.warning("websocket close failed", extra={"connection_id": connection_id,
                                                            "error": type(exc).__name__})
            self.index.request_replay(user_id)
            return False
        self.index.remove(connection_id, user_id)
        self.closed += 1
        return True


def _ledger_list_after() -> Callable[[Session, uuid.UUID, int, int], list[Event]]:
    from chalicelib.events import ledger

    return ledger.list_after


def management_client(endpoint_url: str, region: str) -> Any:
    """The API Gateway Management API client (boto3 `apigatewaymanagementapi`) at `endpoint_url`.

    Short timeouts and one retry: a post is a push to one client, and the notifier has many more to make."""
    import boto3
    from botocore.config import Config

    return boto3.client("apigatewaymanagementapi", endpoint_url=endpoint_url, region_name=region,
                        config=Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 2,
                                                                                 "mode": "standard"},
                                      max_pool_connections=32))
