"""A real HTTP server in the test process that speaks the OpenAI chat-completions protocol.

Each request takes the next scripted reply (then the default one): a JSON
completion, an HTTP error, a delay before answering (to trigger client
timeouts), or a dropped connection. Every request is recorded (path,
headers, parsed body) so tests can assert what was sent and how often.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

EVENTS = Path(__file__).parent / "events"


def recorded(name: str) -> dict[str, Any]:
    """A recorded response body from tests/events/<name>.json."""
    data: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return data


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    #: close the connection without answering (a crashed upstream).
    drop: bool = False


def completion(text: str, *, prompt_tokens: int = 40, completion_tokens: int = 20, model: str = "test-model",
               finish_reason: str = "stop") -> Reply:
    body = recorded("openai_chat_completion")
    body["model"] = model
    body["choices"][0]["message"]["content"] = text
    body["choices"][0]["finish_reason"] = finish_reason
    body["usage"].update(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                         total_tokens=prompt_tokens + completion_tokens)
    return Reply(body=body)


def error(status: int, message: str = "upstream error", headers: dict[str, str] | None = None) -> Reply:
    return Reply(status=status, body={"error": {"message": message, "type": "server_error", "code": None}},
                 headers=headers or {})


class LLMServer:
    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.default = completion("ok")
        self.requests: list[dict[str, Any]] = []
        #: replies the client hung up on before they were written.
        self.abandoned = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self.replies.extend(replies)

    @property
    def calls(self) -> int:
        return len(self.requests)

    def __enter__(self) -> LLMServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()  # wakes handlers sleeping in a delay
        self._httpd.shutdown()
        self._httpd.server_close()

    def _next(self, request: dict[str, Any]) -> Reply:
        with self._lock:
            self.requests.append(request)
            return self.replies.popleft() if self.replies else self.default

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                reply = server._next({"path": self.path, "headers": dict(self.headers),
                                      "body": json.loads(raw) if raw else None})
                if reply.delay and server._stop.wait(reply.delay):
                    return
                if reply.drop:
                    self.close_connection = True
                    return
                payload = reply.body if isinstance(reply.body, bytes | str) else json.dumps(reply.body)
                data = payload.encode() if isinstance(payload, str) else payload
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    server.abandoned += 1  # the client gave up (timed out) first

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return  # keep pytest output clean

        return Handler


class FakeClock:
    """A monotonic clock that only moves when told to (or when something sleeps on it)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def llm_settings(**overrides: Any) -> Any:
    """Settings for provider tests: no stage provider unless given, instant-ish retries."""
    from chalicelib.config import Settings

    # pinned: other tests may leave YMERA_STAGE set, and a non-development stage refuses http and loopback
    values: dict[str, Any] = {"stage": "development", "llm_provider": "", "llm_model": "", "llm_base_url": "",
                              "llm_api_key": "",
                              "llm_api_key_secret_arn": None, "llm_max_attempts": 3, "llm_retry_base_seconds": 0.5,
                              "llm_retry_max_seconds": 8.0, "llm_breaker_failure_threshold": 5,
                              "llm_breaker_reset_seconds": 30.0, "llm_endpoints": "", "llm_min_timeout_seconds": 0.01,
                              "llm_daily_token_budget_per_user": 0, **overrides}
    return Settings(**values)


def agent_context(providers: Any, agent_type: str) -> Any:
    """An AgentContext whose ports hold the given Providers (no database needed by these agents)."""
    import uuid
    from datetime import UTC, datetime

    from chalicelib.agents.base import AgentContext, StaticPorts

    return AgentContext(task_id=uuid.uuid4(), agent_id=uuid.uuid4(), user_id=uuid.uuid4(), agent_type=agent_type,
                        now=datetime.now(UTC), ports=StaticPorts(settings=providers.settings, providers=providers))


def openai_config(server: LLMServer, **extra: Any) -> dict[str, Any]:
    """An agent config pointing at the test server as the user's own (keyless) endpoint (loopback: development)."""
    return {"provider": "openai", "model": "test-model", "base_url": server.url, **extra}


def catalog(server: LLMServer, alias: str = "test", **entry: Any) -> str:
    """YMERA_LLM_ENDPOINTS with the test server as `alias`, its key in YMERA_LLM_KEY_TEST."""
    return json.dumps({alias: {"provider": "openai", "base_url": server.url, "api_key_env": "YMERA_LLM_KEY_TEST",
                               "models": ["test-model", "gpt-4o-mini"], "timeout_seconds": 30, **entry}})
