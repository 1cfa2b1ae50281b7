"""Serve the Chalice app over HTTP with chalice's own local gateway.

Same request/response mapping and authorizers as `chalice local`, but in a
thread of this process (so it shares the environment set up before it), with
Nagle disabled and no auto-reloader.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger("infra.local.server")

REPO_ROOT = Path(__file__).resolve().parents[2]
CHALICE_STAGE = "dev"
LISTEN_BACKLOG = 512


def load_app(repo_root: Path = REPO_ROOT) -> Any:
    """Import the Chalice app object from the top-level app.py.

    Must run after the environment is prepared: the app reads its settings at import.
    """
    root = str(repo_root)
    if root not in sys.path:
        sys.path.insert(0, root)
    module = importlib.import_module("app")
    return module.app


def chalice_config(app_obj: Any, repo_root: Path = REPO_ROOT) -> Any:
    """A chalice Config like `chalice local` builds (incl. .chalice/config.json if present)."""
    from chalice.config import Config

    disk: dict[str, Any] = {}
    path = repo_root / ".chalice" / "config.json"
    if path.is_file():
        try:
            disk = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            log.warning("ignoring unreadable %s: %s", path, exc)
    return Config(
        chalice_stage=CHALICE_STAGE,
        user_provided_params={"chalice_app": app_obj},
        config_from_disk=disk,
        default_params={"project_dir": str(repo_root), "app_name": getattr(app_obj, "app_name", "ymera")},
    )


def _handler_classes(function_name: str) -> tuple[type, type]:
    """chalice.local's request handler and server, with what the local runtime adds."""
    import uuid

    from chalice import local

    from chalicelib.api.http import envelope
    from chalicelib.observability import logger

    class Gateway(local.LocalGateway):  # type: ignore[misc]
        def _generate_lambda_context(self) -> Any:
            context = super()._generate_lambda_context()
            context.function_name = function_name
            # This request's thread logs as the API function (see infra.local.logkeys), not as
            # whichever handler ran last.
            logger.append_keys(function_name=function_name, function_request_id=context.aws_request_id)
            return context

        def _generate_lambda_event(self, method: str, path: str, headers: Any, body: bytes | None) -> Any:
            event = super()._generate_lambda_event(method, path, headers, body)
            # API Gateway's own request id (what audit rows and the access log record as request_id);
            # chalice local leaves it out.
            event["requestContext"].setdefault("requestId", str(uuid.uuid4()))
            return event

    class Handler(local.ChaliceRequestHandler):  # type: ignore[misc]
        # Headers and body go out in separate writes; with Nagle on, keep-alive
        # clients wait for the delayed ACK (~44 ms per request, FIELD-NOTES).
        disable_nagle_algorithm = True

        def __init__(self, request: Any, client_address: Any, server: Any, app_object: Any,
                     config: Any) -> None:
            self.local_gateway = Gateway(app_object, config)
            local.BaseHTTPRequestHandler.__init__(self, request, client_address, server)

        def _send_error_response(self, error: local.LocalGatewayException) -> None:
            # An unknown route (chalice's 403 "Missing Authentication Token") answers as the deployed API's
            # MISSING_AUTHENTICATION_TOKEN gateway response does (infra/gateway_responses.py): a 404 envelope.
            said = error.body or b""
            if isinstance(error, local.ForbiddenError) and (b"Missing Authentication Token" in said
                                                            or b"Authorization header requires" in said):
                body = json.dumps(envelope("NOT_FOUND", "no such route")).encode()
                headers = {**error.headers, "Content-Type": "application/json"}
                headers.pop("x-amzn-ErrorType", None)
                self._send_http_response(404, headers, body)
                return
            super()._send_error_response(error)

    class Server(local.ThreadedHTTPServer):  # type: ignore[misc]
        # socketserver listens with a backlog of 5: at 100 concurrent clients the kernel dropped
        # SYNs and 8-48 % of the connections failed (reset, or a connect stalled past the client's
        # timeout). 512 is what a real server uses (the kernel caps it at net.core.somaxconn).
        request_queue_size = LISTEN_BACKLOG

    return Handler, Server


class ApiServer:
    def __init__(self, app_obj: Any, host: str, port: int, function_name: str = "ymera-local-api") -> None:
        from chalice import local

        handler_cls, server_cls = _handler_classes(function_name)
        # What create_local_server does, with our handler. It binds the socket here, so a busy
        # port fails now, before anything is announced. The server is the threaded variant.
        if not isinstance(app_obj, local.LocalChalice):
            local.CustomLocalChalice.__bases__ = (local.LocalChalice, app_obj.__class__)
            app_obj.__class__ = local.CustomLocalChalice
        self._local = local.LocalDevServer(app_obj, chalice_config(app_obj), host, port,
                                           handler_cls=handler_cls, server_cls=server_cls)
        self.host, self.port = self._local.server.server_address[:2]
        self._thread = threading.Thread(
            target=self._local.server.serve_forever, kwargs={"poll_interval": 0.2},
            name="chalice-http", daemon=True,
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ApiServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._local.server.shutdown()  # from another thread than serve_forever (else deadlock)
        self._local.server.server_close()
        self._thread.join(timeout=5)
