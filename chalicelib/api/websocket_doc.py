"""The WebSocket API in the OpenAPI document (`x-websocket`: OpenAPI has no WebSocket operations).

Connect, then the messages in both directions; docs/websocket.md says the same at length."""

from __future__ import annotations

from typing import Any

_IDS = {"type": "array", "maxItems": 100, "items": {"type": "string", "format": "uuid"}}

EVENT: dict[str, Any] = {
    "type": "object",
    "description": "One ledger event (the same shape as GET /events items). Deduplicate on event_id: delivery "
                   "is at-least-once.",
    "required": ["event_id", "type", "resource", "status", "occurred_at", "payload"],
    "properties": {
        "event_id": {"type": "integer", "description": "Monotonic and gap-free per user."},
        "type": {"type": "string", "examples": ["task.status_changed", "run.status_changed", "run.step_changed",
                                                "run.approval_requested", "webhook.disabled"]},
        "resource": {"type": "object", "properties": {"type": {"enum": ["task", "run", "step"]},
                                                      "id": {"type": "string", "format": "uuid"}}},
        "run_id": {"type": ["string", "null"], "format": "uuid"},
        "step_id": {"type": ["string", "null"]},
        "status": {"type": "string"},
        "occurred_at": {"type": "string", "format": "date-time"},
        "payload": {"type": "object"},
    },
}

WEBSOCKET: dict[str, Any] = {
    "url": "GET /status answers `websocket_url` (wss://... on AWS; ws://127.0.0.1:<API port + 1> under make run).",
    "connect": {
        "query": {"token": "An access token (or send it as the subprotocol `bearer.<token>` next to `ymera`).",
                  "last_event_id": "Optional: first replay the events after this id, then live ones."},
        "refusals": {"401": "missing, invalid, expired or revoked token (logout, deactivation)",
                     "422": "last_event_id is not an integer >= 0",
                     "429": "the user already holds websocket_max_connections_per_user connections"},
    },
    "client_messages": {
        "subscribe": {"type": "object", "required": ["action"], "additionalProperties": False,
                      "properties": {"action": {"const": "subscribe"}, "task_ids": _IDS, "run_ids": _IDS,
                                     "types": {"type": "array", "maxItems": 100, "items": {"type": "string"}}},
                      "description": "Narrow this connection: events of these tasks OR runs, then of these types. "
                                     "Nothing listed = everything again."},
        "ping": {"type": "object", "properties": {"action": {"const": "ping"}}},
    },
    "server_messages": {
        "event": EVENT,
        "ws.subscribed": {"type": "object", "properties": {"type": {"const": "ws.subscribed"},
                                                           "subscription": {"type": "object"}}},
        "ws.pong": {"type": "object", "properties": {"type": {"const": "ws.pong"}}},
        "ws.error": {"type": "object", "properties": {"type": {"const": "ws.error"}, "error": {
            "type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
        "ws.replay_truncated": {"type": "object", "description": "More events were missed than a replay sends: "
                                "page the rest with GET /events?after=<last_event_id>.",
                                "properties": {"type": {"const": "ws.replay_truncated"},
                                               "last_event_id": {"type": "integer"}}},
    },
}
