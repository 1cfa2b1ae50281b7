"""The WebSocket API's three routes ($connect, $default, $disconnect), registered from app.py with
`app.on_ws_connect()` etc. (Chalice's WebSocket support; docs/websocket.md). Their names are app.py's:
Chalice names the Lambda handler "app.<function name>", so app.py binds each to the same name.

Chalice Blueprints cannot carry WebSocket handlers (a blueprint has no `websocket_api`, so its handlers
would get raw dicts), hence plain functions here and three registration lines in app.py. Each handler
parses the event, makes one service call (chalicelib.services.websocket) and maps the result:
$connect answers with a status API Gateway turns into the handshake's (401/422/429 refuse it);
$default replies on the connection itself (a WebSocket route has no HTTP response to carry it).
"""

from __future__ import annotations

import json
from typing import Any

from chalice.app import WebsocketEvent

from chalicelib import errors
from chalicelib.container import get_container
from chalicelib.observability import logger


def _status(exc: errors.AppError) -> int:
    from chalicelib.api.http import STATUS

    return next((code for cls, code in STATUS.items() if isinstance(exc, cls)), 500)


def ws_connect(event: WebsocketEvent) -> dict[str, Any]:
    raw = event.to_dict()
    try:
        accepted = get_container().websocket.connect(event.connection_id, raw.get("queryStringParameters"),
                                                     raw.get("headers"))
    except errors.AppError as exc:
        # Refused: API Gateway answers the upgrade request with this status and never opens the connection.
        logger.info("websocket connect refused", extra={"code": exc.code})
        return {"statusCode": _status(exc), "body": json.dumps({"error": {"code": exc.code, "message": exc.message}})}
    headers = {"Sec-WebSocket-Protocol": accepted.subprotocol} if accepted.subprotocol else {}
    return {"statusCode": 200, "headers": headers}


def ws_message(event: WebsocketEvent) -> dict[str, Any]:
    container = get_container()
    try:
        try:
            body = json.loads(event.body)
        except ValueError as exc:
            raise errors.BadRequestError("a message is JSON") from exc
        reply = container.websocket.message(event.connection_id, body)
    except errors.AppError as exc:
        reply = {"type": "ws.error", "error": {"code": exc.code, "message": exc.message}}
    _reply(event, json.dumps(reply, separators=(",", ":")))
    return {"statusCode": 200}


def ws_disconnect(event: WebsocketEvent) -> dict[str, Any]:
    get_container().websocket.disconnect(event.connection_id)
    return {"statusCode": 200}


def _reply(event: WebsocketEvent, text: str) -> None:
    """Post to the connection the message came from (through the same Management API as the notifier)."""
    container = get_container()
    if container.settings.websocket_management_url:
        client = container.websocket_management
    else:  # the API Gateway stage the event came through (what chalice's own WebsocketAPI would use)
        from chalicelib.events.websocket_sink import management_client

        client = management_client(f"https://{event.domain_name}/{event.stage}", container.settings.aws_region)
    try:
        client.post_to_connection(ConnectionId=event.connection_id, Data=text.encode())
    except client.exceptions.GoneException:
        container.websocket.disconnect(event.connection_id)
