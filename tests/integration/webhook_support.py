"""A webhook receiver on loopback for the tests: answers from a script, records every request."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0


@dataclass(frozen=True)
class Received:
    path: str
    headers: Any  # email.message.Message: case-insensitive, as a receiver sees them
    body: bytes
    at: float  # time.time() when it arrived


class Receiver:
    """`script` answers requests in order; once it runs out, `default` answers."""

    def __init__(self) -> None:
        self.script: list[Answer] = []
        self.default = Answer()
        self.requests: list[Received] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver.arrived:
                    answer = receiver.script.pop(0) if receiver.script else receiver.default
                    receiver.requests.append(Received(self.path, self.headers, body, time.time()))
                    receiver.arrived.notify_all()
                if answer.delay:
                    time.sleep(answer.delay)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(answer.body)))
                self.end_headers()
                try:
                    self.wfile.write(answer.body)
                except OSError:
                    return  # the sender hung up (a timeout test): nothing to answer to

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait_for(self, n: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"the receiver got {len(self.requests)} request(s), expected {n}")
                self.arrived.wait(left)
            return list(self.requests)


@contextmanager
def receiving() -> Iterator[Receiver]:
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


def python_block(path: Path, marker: str) -> str:
    """The first ```python block after `marker` in a Markdown file (docs snippets the tests run)."""
    text = path.read_text()
    start = text.index(marker)
    found = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert found is not None, f"no python block after {marker!r} in {path}"
    return found.group(1)


def docs_verify() -> Any:
    """`verify` exactly as docs/webhooks.md shows it."""
    namespace: dict[str, Any] = {}
    exec(compile(python_block(ROOT / "docs" / "webhooks.md", "<!-- verify-snippet"), "docs/webhooks.md", "exec"),
         namespace)
    return namespace["verify"]
