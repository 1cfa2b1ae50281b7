"""A local API Gateway WebSocket API: what `chalice local` lacks (chalice#1674).

- WebSocket endpoint (default: API port + 1): every connection becomes API Gateway-shaped `$connect`,
  `$default` (one per message) and `$disconnect` events for the Chalice app's own WebSocket handlers
  (`app.websocket_handlers`, called in-process like the API's routes). A `$connect` answering anything
  but 2xx refuses the handshake with that status, as API Gateway does; a `Sec-WebSocket-Protocol`
  header in its answer selects that subprotocol.
- Management API (default: API port + 2): `POST/GET/DELETE /@connections/{id}` under any stage path,
  the shape boto3's `apigatewaymanagementapi` client speaks (410 + `GoneException` for an unknown or
  closed connection), so the notifier's client works unchanged with `endpoint_url` from settings.

The server runs an asyncio loop (the `websockets` library) in a thread of its own; handlers run in a
thread pool because they block (Postgres, Redis).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import logging
import os
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from websockets.exceptions import ConnectionClosed

from infra.local.runner import DEFAULT_ACCOUNT, LambdaContext, import_handler

log = logging.getLogger("infra.local.wsgateway")

Handler = Callable[[dict[str, Any], Any], Any]
STAGE = "local"
API_ID = "local"
#: how long a post waits for a connection whose $connect has answered but whose handshake is still going out.
OPEN_WAIT_SECONDS = 2.0
HANDLER_TIMEOUT_SECONDS = 30
_CONNECTIONS_PATH = re.compile(r"^(?:/[^@][^/]*)*/@connections/(?P<id>[^/]+)$")


def new_connection_id() -> str:
    """Like API Gateway's (`L0SM9cOFvHcCIhw=`): 10 random bytes, base64."""
    return base64.b64encode(secrets.token_bytes(10)).decode()


def handlers_of(app_obj: Any) -> dict[str, Handler]:
    """route key ($connect, $default, $disconnect) -> the deployed Lambda handler ("app.ws_connect", ...)."""
    return {key: import_handler(cfg.handler_string) for key, cfg in app_obj.websocket_handlers.items()}


@dataclass
class _Conn:
    connection_id: str
    source_ip: str
    user_agent: str
    connected_at: float = field(default_factory=time.time)
    last_active: float = field(default_factory=time.time)
    socket: Any = None
    opened: asyncio.Event = field(default_factory=asyncio.Event)


class LocalWebSocketGateway:
    def __init__(self, handlers: dict[str, Handler], host: str, port: int, management_port: int, *,
                 function_prefix: str = "ymera-local", region: str = "us-east-1", workers: int = 32) -> None:
        self.handlers = handlers
        self.host = host
        self.port = port
        self.management_port = management_port
        self.function_prefix = function_prefix
        self.region = region
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ws-handler")
        self._conns: dict[str, _Conn] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._http = ThreadingHTTPServer((host, management_port), _management_handler(self))
        self._http.daemon_threads = True
        self._http.request_queue_size = 512  # type: ignore[misc]  # 200 clients' posts at once
        self.management_port = self._http.server_address[1]
        self._http_thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.2},
                                             name="ws-management", daemon=True)

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def management_url(self) -> str:
        return f"http://{self.host}:{self.management_port}/{STAGE}"

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> LocalWebSocketGateway:
        self._thread = threading.Thread(target=self._run, name="ws-gateway", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            self._http.server_close()
            raise OSError(f"cannot listen on {self.host}:{self.port}: {self._error}") from self._error
        self._http_thread.start()
        return self

    def _run(self) -> None:
        from websockets.asyncio.server import serve

        async def listen() -> Any:  # serve() needs the running loop
            return await serve(self._session, self.host, self.port, process_request=self._connect,
                               select_subprotocol=_select_subprotocol, ping_interval=None, max_size=128 * 1024,
                               compression=None)

        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(listen())
            self.port = self._server.sockets[0].getsockname()[1]
        except Exception as exc:  # noqa: BLE001 - reported by start(), which is waiting for this thread
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        loop.run_forever()
        loop.close()

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        loop = self._loop
        if loop is not None and self._server is not None:
            async def close() -> None:
                self._server.close()  # closes open connections with 1001 (going away)
                try:
                    await asyncio.wait_for(self._server.wait_closed(), 1.5)
                except TimeoutError:
                    log.warning("websocket connections still closing at shutdown")
                loop.stop()

            asyncio.run_coroutine_threadsafe(close(), loop)
        if self._thread is not None:
            self._thread.join(timeout=2.5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- the WebSocket side -------------------------------------------------------------------------------------

    async def _invoke(self, route_key: str, event: dict[str, Any]) -> dict[str, Any]:
        if not self.handlers:  # listening before the app is loaded: nobody may connect yet
            return {"statusCode": 503, "body": "starting"}
        handler = self.handlers.get(route_key) or self.handlers.get("$default")
        if handler is None:
            return {"statusCode": 200}
        name = {"$connect": "websocket_connect", "$disconnect": "websocket_disconnect"}.get(
            route_key, "websocket_message")
        context = LambdaContext(f"{self.function_prefix}-{name}", HANDLER_TIMEOUT_SECONDS, 512, self.region,
                                DEFAULT_ACCOUNT)
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._pool, handler, event, context)
        except Exception:
            log.exception("websocket %s handler failed", route_key)
            return {"statusCode": 500}
        return result if isinstance(result, dict) else {"statusCode": 200}

    async def _connect(self, connection: Any, request: Any) -> Any:
        peer = connection.remote_address or ("127.0.0.1", 0)
        headers = {k: v for k, v in request.headers.raw_items()}
        conn = _Conn(new_connection_id(), str(peer[0]), headers.get("User-Agent", ""))
        query = dict(parse_qsl(urlsplit(request.path).query, keep_blank_values=True))
        event = self._event("$connect", "CONNECT", conn, headers=headers, query=query)
        self._conns[conn.connection_id] = conn  # posts wait for `opened` (see OPEN_WAIT_SECONDS)
        result = await self._invoke("$connect", event)
        status = int(result.get("statusCode") or 200)
        if not 200 <= status < 300:
            self._conns.pop(conn.connection_id, None)
            return connection.respond(HTTPStatus(status), str(result.get("body") or HTTPStatus(status).phrase) + "\n")
        connection.ymera_connection = conn
        connection.ymera_subprotocol = (result.get("headers") or {}).get("Sec-WebSocket-Protocol")
        return None

    async def _session(self, connection: Any) -> None:
        conn: _Conn = connection.ymera_connection
        conn.socket = connection
        conn.opened.set()
        try:
            async for message in connection:
                conn.last_active = time.time()
                body = message if isinstance(message, str) else message.decode("utf-8", "replace")
                await self._invoke("$default", self._event("$default", "MESSAGE", conn, body=body))
        except ConnectionClosed as exc:  # a dropped client: same as a close
            log.debug("websocket %s ended: %s", conn.connection_id, type(exc).__name__)
        finally:
            self._conns.pop(conn.connection_id, None)
            await self._invoke("$disconnect", self._event("$disconnect", "DISCONNECT", conn))

    def _event(self, route_key: str, event_type: str, conn: _Conn, *, headers: dict[str, str] | None = None,
               query: dict[str, str] | None = None, body: str | None = None) -> dict[str, Any]:
        now = time.time()
        context = {
            "routeKey": route_key, "eventType": event_type, "messageDirection": "IN",
            "extendedRequestId": uuid.uuid4().hex, "requestId": uuid.uuid4().hex,
            "requestTime": datetime.fromtimestamp(now, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "requestTimeEpoch": int(now * 1000), "connectedAt": int(conn.connected_at * 1000),
            "stage": STAGE, "apiId": API_ID, "domainName": f"{self.host}:{self.port}",
            "connectionId": conn.connection_id,
            "identity": {"sourceIp": conn.source_ip, "userAgent": conn.user_agent},
        }
        event: dict[str, Any] = {"requestContext": context, "isBase64Encoded": False}
        if route_key == "$default":
            context["messageId"] = uuid.uuid4().hex
            event["body"] = body
        if route_key == "$connect":
            event["headers"] = headers or {}
            event["multiValueHeaders"] = {k: [v] for k, v in (headers or {}).items()}
            event["queryStringParameters"] = query or None
            event["multiValueQueryStringParameters"] = {k: [v] for k, v in (query or {}).items()} or None
        return event

    # --- the Management API (called from the HTTP server's threads) --------------------------------------------

    def post(self, connection_id: str, data: bytes) -> bool:
        return self._call(self._post(connection_id, data))

    def delete(self, connection_id: str) -> bool:
        return self._call(self._delete(connection_id))

    def info(self, connection_id: str) -> dict[str, Any] | None:
        conn = self._conns.get(connection_id)
        if conn is None or conn.socket is None:
            return None
        # The wire names (botocore's model maps them to ConnectedAt, Identity.SourceIp, ...).
        return {"connectedAt": _iso(conn.connected_at), "lastActiveAt": _iso(conn.last_active),
                "identity": {"sourceIp": conn.source_ip, "userAgent": conn.user_agent}}

    def _call(self, coro: Any) -> bool:
        if self._loop is None:
            coro.close()
            return False
        try:
            return bool(asyncio.run_coroutine_threadsafe(coro, self._loop).result(OPEN_WAIT_SECONDS + 3))
        except (concurrent.futures.TimeoutError, RuntimeError):
            return False

    async def _open(self, connection_id: str) -> _Conn | None:
        conn = self._conns.get(connection_id)
        if conn is None:
            return None
        try:
            await asyncio.wait_for(conn.opened.wait(), OPEN_WAIT_SECONDS)
        except TimeoutError:
            return None
        return conn if connection_id in self._conns else None

    async def _post(self, connection_id: str, data: bytes) -> bool:
        conn = await self._open(connection_id)
        if conn is None:
            return False
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        try:
            await conn.socket.send(text if text is not None else data)
        except ConnectionClosed as exc:  # closed meanwhile: Gone
            log.debug("post to %s failed: %s", connection_id, type(exc).__name__)
            return False
        return True

    async def _delete(self, connection_id: str) -> bool:
        conn = await self._open(connection_id)
        if conn is None:
            return False
        await conn.socket.close(1000, "closed by the server")
        return True


def _select_subprotocol(connection: Any, offered: Any) -> Any:
    chosen = getattr(connection, "ymera_subprotocol", None)
    return chosen if chosen in offered else None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _management_handler(gateway: LocalWebSocketGateway) -> type[BaseHTTPRequestHandler]:
    class ManagementApi(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: boto3 reuses its connections
        disable_nagle_algorithm = True

        def _connection_id(self) -> str | None:
            match = _CONNECTIONS_PATH.match(urlsplit(self.path).path)
            return unquote(match.group("id")) if match else None

        def _answer(self, status: int, body: dict[str, Any] | None = None, error: str | None = None) -> None:
            payload = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            if error:
                self.send_header("x-amzn-ErrorType", error)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _gone(self) -> None:
            self._answer(410, {"message": None}, "GoneException")

        def _route(self) -> str | None:
            cid = self._connection_id()
            if cid is None:
                self._answer(404, {"message": "no such route"}, "NotFoundException")
            return cid

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(length) if length else b""
            cid = self._route()
            if cid is not None:
                if len(data) > 128 * 1024:  # API Gateway's frame limit for post_to_connection
                    self._answer(413, {"message": "payload too large"}, "PayloadTooLargeException")
                elif gateway.post(cid, data):
                    self._answer(200)
                else:
                    self._gone()

        def do_GET(self) -> None:  # noqa: N802
            cid = self._route()
            if cid is not None:
                info = gateway.info(cid)
                self._answer(200, info) if info is not None else self._gone()

        def do_DELETE(self) -> None:  # noqa: N802
            cid = self._route()
            if cid is not None:
                self._answer(204) if gateway.delete(cid) else self._gone()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            log.debug("management api: " + format, *args)

    return ManagementApi


def default_ports(api_port: int) -> tuple[int, int]:
    """(WebSocket port, Management API port): $YMERA_WS_PORT or API port + 1, and the one after it."""
    ws = int(os.environ.get("YMERA_WS_PORT") or api_port + 1)
    return ws, ws + 1
