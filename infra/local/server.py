"""Serve the Chalice app over HTTP with chalice's own local gateway.

Same request/response mapping and authorizers as `chalice local`, but in a
thread of this process (so it shares the environment set up before it), with
Nagle disabled and no auto-reloader.
"""

from __future__ import annotations

import functools
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


def envelope_handler() -> type:
    """chalice's request handler, with its unknown-route 403 ("Missing Authentication Token") answered as
    the deployed API's MISSING_AUTHENTICATION_TOKEN gateway response does: a 404 in the error envelope."""
    from chalice import local

    from chalicelib.api.http import envelope

    class EnvelopeRequestHandler(local.ChaliceRequestHandler):
        def _send_error_response(self, error: local.LocalGatewayException) -> None:
            said = error.body or b""
            if isinstance(error, local.ForbiddenError) and (b"Missing Authentication Token" in said
                                                            or b"Authorization header requires" in said):
                body = json.dumps(envelope("NOT_FOUND", "no such route")).encode()
                headers = {**error.headers, "Content-Type": "application/json"}
                headers.pop("x-amzn-ErrorType", None)
                self._send_http_response(404, headers, body)
                return
            super()._send_error_response(error)

    return EnvelopeRequestHandler


class ApiServer:
    def __init__(self, app_obj: Any, host: str, port: int) -> None:
        from chalice import local

        # Headers and body go out in separate writes; with Nagle on, keep-alive
        # clients wait for the delayed ACK (~44 ms per request, FIELD-NOTES).
        local.ChaliceRequestHandler.disable_nagle_algorithm = True
        # create_local_server binds the socket here, so a busy port fails now,
        # before anything is announced. The server is the threaded variant.
        self._local = local.create_local_server(app_obj, chalice_config(app_obj), host, port)
        # An unknown route answers like the deployed API's gateway response (infra/gateway_responses.py).
        self._local.server.RequestHandlerClass = functools.partial(
            envelope_handler(), app_object=app_obj, config=chalice_config(app_obj))
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
