"""The AWS endpoint: an external emulator (LocalStack) or an embedded moto server.

Both end with `AWS_ENDPOINT_URL` exported, which boto3 honours natively, so the
app and the handlers reach "AWS" without any local-only code path.

`make run` starts moto as a child process (`python -m infra.local.emulator`, `spawn_moto`): in the API's
process its server threads held 46 % of the GIL under 8 concurrent POST /tasks clients (issue #14), and
every SQS call of a request waited on them. The child ignores Ctrl-C (the parent stops it, after the
API and the runner), exits when the parent dies (PR_SET_PDEATHSIG, and EOF on its stdin), and an
unexpected exit is reported by the parent. `start_moto` (a thread of this process) is for tests and
benchmarks that want moto in-process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

log = logging.getLogger("infra.local.emulator")


class EndpointError(RuntimeError):
    """The AWS endpoint could not be reached or started."""


@dataclass
class AwsEndpoint:
    url: str
    kind: str  # "moto" (embedded) or "external"
    _stop: Callable[[], None] | None = field(default=None, repr=False)
    #: the emulator's process id when it runs as a child (spawn_moto), else None.
    pid: int | None = None

    def stop(self) -> None:
        if self._stop is not None:
            self._stop()
            self._stop = None


def sqs_client(endpoint_url: str | None = None, *, quick: bool = False, max_pool_connections: int = 10) -> Any:
    """A boto3 SQS client on the local endpoint.

    `quick` fails fast (health checks); the default read timeout must stay above
    the runner's long-poll wait. `max_pool_connections` must cover every thread that
    uses the client at once (botocore's default, 10, is fewer than the runner's pollers:
    "Connection pool is full, discarding connection").
    """
    import boto3
    from botocore.config import Config

    cfg = Config(connect_timeout=2, read_timeout=3, retries={"max_attempts": 1}) if quick else \
        Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"},
               max_pool_connections=max_pool_connections)
    return boto3.client(
        "sqs",
        endpoint_url=endpoint_url or os.environ.get("AWS_ENDPOINT_URL"),
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        config=cfg,
    )


#: LocalStack's first request can take ~13 s while it starts its services (issue #12): wait this long by default.
DEFAULT_ENDPOINT_WAIT_SECONDS = 60.0
#: how often the wait says what it is waiting for.
WAIT_REPORT_SECONDS = 5.0


def check_endpoint(url: str, wait_seconds: float | None = None, *, clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> None:
    """Wait until something AWS-shaped answers at `url`, saying what we wait for; fail readably after `wait_seconds`.

    An emulator that is still warming up (LocalStack answers its first request only once its services
    started) is waited for, not reported as missing. `YMERA_ENDPOINT_WAIT_SECONDS` overrides the default.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    if wait_seconds is None:
        wait_seconds = float(os.environ.get("YMERA_ENDPOINT_WAIT_SECONDS", DEFAULT_ENDPOINT_WAIT_SECONDS))
    started = clock()
    reported = started
    while True:
        try:
            sqs_client(url, quick=True).list_queues(MaxResults=1)
            if clock() - started >= 1:
                log.info("AWS endpoint %s answered after %.1f s", url, clock() - started)
            return
        except (BotoCoreError, ClientError, OSError) as exc:
            waited = clock() - started
            if waited >= wait_seconds:
                raise EndpointError(
                    f"AWS_ENDPOINT_URL={url} did not answer SQS ListQueues within {wait_seconds:g} s ({exc}). "
                    "Start LocalStack (e.g. `localstack start` or its Docker image; a first start can take a "
                    "minute), raise YMERA_ENDPOINT_WAIT_SECONDS, or unset AWS_ENDPOINT_URL to use the embedded "
                    "moto server."
                ) from exc
            if clock() - reported >= WAIT_REPORT_SECONDS or reported == started:
                log.info("waiting for the AWS endpoint %s to answer SQS ListQueues (%.0f s of %g s): %s",
                         url, waited, wait_seconds, type(exc).__name__)
                reported = clock()
            sleep(0.5)


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def untrack_sqs_messages() -> None:
    """moto's BaseModel keeps every model instance it ever made in `instances_tracked` (for its reset and model
    listing); for SQS that is every message and the copy each receive makes, ~2.2 kB a task for the life of
    `make run` (bench/run_memory.py: 1.106x RSS from 1,000 to 10,000 tasks). Messages are not tracked."""
    from collections import deque

    from moto.sqs.models import Message

    Message.instances_tracked = deque(maxlen=0)  # type: ignore[attr-defined]  # append() keeps nothing


#: moto's receipt handles: this many random lowercase letters.
RECEIPT_HANDLE_LENGTH = 185
#: the moto release `speed_up_sqs` was written against.
SPED_UP_MOTO = "5.2.5"


class _Visible:
    """moto's `Queue.messages` (the visible, undelayed messages), as a view instead of a new list: moto's
    receive iterates it and stops after MaxNumberOfMessages, its long poll asks whether it is empty, and
    ApproximateNumberOfMessages takes its len(). As a list it cost a pass over the whole queue per receive
    (~9 ms with 5,000 queued, on one GIL with every other call to the emulator); as a view a receive reads
    the queue's head up to the batch it returns."""

    __slots__ = ("_messages", "_now")

    def __init__(self, messages: list[Any], now: float) -> None:
        self._messages, self._now = messages, now

    def __iter__(self) -> Iterator[Any]:
        now = self._now
        return (m for m in self._messages if now > m.visible_at and not now < m.delayed_until)

    def __bool__(self) -> bool:
        return next(iter(self), None) is not None

    def __len__(self) -> int:
        return sum(1 for _ in self)


def speed_up_sqs() -> None:
    """moto 5's SQS is O(queue depth) per call with a large constant: its clock (`unix_time`) builds datetimes,
    every visibility check calls it twice, a send reads attributes that take three passes over every message,
    and each message a receive returns recomputes *all* the queue's attributes just to read
    MessageRetentionPeriod. With 5,000 messages queued a receive took ~3 s and a send ~1 s (this machine), so a
    5,000-task backlog would take an hour to drain. Same answers, cheaper: the clock from time.time() (read once
    per pass), the retention period read from the queue. Applied in `make run`'s moto child (and by the
    in-process benchmarks), never to an in-process moto of the tests; only for the moto release it was written
    against (requirements-dev.txt), since it replaces moto internals."""
    import string

    import moto
    import moto.sqs.models as sqs_models
    from moto.moto_api._internal import mock_random

    if moto.__version__ != SPED_UP_MOTO:
        log.warning("moto %s is not %s: its SQS is left as it is (slow with deep queues)", moto.__version__,
                    SPED_UP_MOTO)
        return

    if getattr(sqs_models, "_ymera_fast_sqs", False):
        return
    slow_unix_time = sqs_models.unix_time

    def unix_time(dt: datetime | None = None) -> float:
        return time.time() if dt is None else float(slow_unix_time(dt))

    def unix_time_millis(dt: datetime | None = None) -> float:
        return unix_time(dt) * 1000.0

    def retained(self: Any, queue_name: str, message: Any) -> bool:
        queue = self.get_queue(queue_name)
        return bool(int(queue.message_retention_period) + message.sent_timestamp / 1000 > time.time())

    def visible_now(self: Any) -> _Visible:  # Queue.messages: visible and not delayed, one clock read
        return _Visible(self._messages, time.time() * 1000.0)

    def delayed_count(self: Any) -> int:
        now = time.time() * 1000.0
        return sum(1 for m in self._messages if now < m.delayed_until)

    def in_flight_count(self: Any) -> int:
        now = time.time() * 1000.0
        return sum(1 for m in self._messages if not now > m.visible_at)

    def receipt_handle() -> str:  # moto's shape (185 lowercase letters, its seedable random), one call not 185
        return "".join(mock_random.choices(string.ascii_lowercase, k=RECEIPT_HANDLE_LENGTH))

    sqs_models.generate_receipt_handle = receipt_handle
    sqs_models.Queue.messages = property(visible_now)  # type: ignore[assignment,method-assign]
    sqs_models.Queue.approximate_number_of_messages_delayed = property(delayed_count)  # type: ignore[assignment,method-assign]
    sqs_models.Queue.approximate_number_of_messages_not_visible = property(in_flight_count)  # type: ignore[assignment,method-assign]
    sqs_models.unix_time = unix_time
    sqs_models.unix_time_millis = unix_time_millis
    sqs_models.SQSBackend.is_message_valid_based_on_retention_period = retained  # type: ignore[method-assign]
    setattr(sqs_models, "_ymera_fast_sqs", True)  # noqa: B010 - a marker of our own on a foreign module


def cache_moto_dispatch() -> None:
    """Per-request costs of moto's server that never change while it runs: the list of its service
    packages (a listdir and ~180 stat calls on every request, a third of a SendMessage's CPU), the
    camel-case-to-snake-case conversion of action names and the method names of a response class. All are
    cached; same answers."""
    import functools

    import moto.backends as backends
    import moto.core.responses as responses

    if getattr(backends, "_ymera_cached", False):
        return
    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules  # type: ignore[assignment]
    responses.camelcase_to_underscores = functools.lru_cache(maxsize=4096)(  # type: ignore[assignment]
        responses.camelcase_to_underscores)
    # Every action looks up its method among the response class's functions (inspect.getmembers: ~4 % of a
    # SendMessage's CPU); a class's functions do not change while it serves.
    responses.method_names_from_class = functools.lru_cache(maxsize=512)(  # type: ignore[assignment]
        responses.method_names_from_class)
    setattr(backends, "_ymera_cached", True)  # noqa: B010 - a marker of our own on a foreign module


def keep_alive_handler() -> type[Any]:
    """moto's request handler, answering on a kept-alive connection.

    werkzeug's development server (what moto serves with) ends every response with `Connection: close`: each SQS
    call of the API, the runner and its pollers paid a TCP connect, a new server thread, and a response written in
    pieces (status and headers, then the body). This handler reads the request body whole (its Content-Length),
    runs moto's WSGI app, and writes status, headers and body in one send, with TCP_NODELAY, keeping the connection
    for the client's next call. Anything else (a chunked or `Expect: 100-continue` request, a body without a
    length) goes through werkzeug's own path, which closes the connection after it, as before."""
    import io

    from moto.moto_server.werkzeug_app import MotoRequestHandler

    hop_by_hop = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})

    class KeepAliveMotoRequestHandler(MotoRequestHandler):  # type: ignore[misc]
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def run_wsgi(self) -> None:
            length = self.headers.get("Content-Length")
            if (self.headers.get("Transfer-Encoding") or self.headers.get("Expect")
                    or (length is None and self.command in ("POST", "PUT", "PATCH"))):
                super().run_wsgi()  # werkzeug's path: it closes the connection after the response
                return
            try:
                size = int(length or 0)
            except ValueError:
                self.send_error(400, "bad Content-Length")
                self.close_connection = True
                return
            body = self.rfile.read(size) if size > 0 else b""
            if len(body) < size:  # the client went away mid-body
                self.close_connection = True
                return
            environ = self.make_environ()
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(size)
            started: list[Any] = []

            def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                started[:] = [status, headers]
                return lambda data: chunks.append(data)

            chunks: list[bytes] = []
            try:
                result = self.server.app(environ, start_response)
                try:
                    chunks.extend(result)
                finally:
                    if hasattr(result, "close"):
                        result.close()
            except Exception:  # noqa: BLE001 - as werkzeug does: a 500 for the client, the traceback in the log
                log.exception("moto failed on %s %s", self.command, self.path)
                started[:] = ["500 Internal Server Error", [("Content-Type", "text/plain")]]
                chunks = [b"Internal Server Error"]
                self.close_connection = True
            status, headers = started
            payload = b"".join(chunks)
            lines = [f"{self.protocol_version} {status}\r\n"]
            lines += [f"{k}: {v}\r\n" for k, v in headers if k.lower() not in hop_by_hop]
            lines.append(f"Content-Length: {len(payload)}\r\n")
            if self.close_connection:
                lines.append("Connection: close\r\n")
            lines.append("\r\n")
            head = "".join(lines).encode("latin-1")
            self.wfile.write(head + (b"" if self.command == "HEAD" else payload))

    return KeepAliveMotoRequestHandler


def start_moto(host: str = "127.0.0.1", port: int = 0, *, fast_sqs: bool = False) -> AwsEndpoint:
    """Run moto's server in a thread with Step Functions execution enabled (connections kept alive:
    `keep_alive_handler`). `fast_sqs`: SendMessageBatch and DeleteMessageBatch answered by
    `infra.local.sqs_front` on moto's own backend (make run's child)."""
    untrack_sqs_messages()
    # make_server binds here (a busy port raises), but a requested port is checked first for a readable error.
    if port and not _port_is_free(host, port):
        raise EndpointError(f"YMERA_MOTO_PORT={port} is already in use on {host}")
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    app: Any = DomainDispatcherApplication(create_backend_app)
    if fast_sqs:
        from infra.local.sqs_front import FastSqsFront

        app = FastSqsFront(app)
    server = make_server(host, port, app, threaded=True, request_handler=keep_alive_handler())
    thread = threading.Thread(target=server.serve_forever, name="moto-server", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()  # kept-alive connections' threads are daemons: they end with the process
        server.server_close()
        thread.join()

    real_port = server.server_address[1]  # port 0 -> the one the kernel picked
    url = f"http://{host}:{real_port}"
    # Step Functions service integrations call back into moto through MOTO_PORT.
    os.environ["MOTO_PORT"] = str(real_port)
    os.environ["AWS_ENDPOINT_URL"] = url
    try:
        _post_json(f"{url}/moto-api/config", {"stepfunctions": {"execute_state_machine": True}})
    except OSError as exc:
        stop()
        raise EndpointError(f"moto started on {url} but rejected its config: {exc}") from exc
    return AwsEndpoint(url=url, kind="moto", _stop=stop)


def _post_json(url: str, payload: dict[str, Any]) -> None:
    req = urllib.request.Request(
        url, data=json.dumps(payload).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        resp.read()


def localstack_url(localstack_host: str | None = None) -> str:
    """LocalStack's edge endpoint, resolved the way LocalStack's own clients resolve it.

    localstack-client reads `LOCALSTACK_HOST` (default localhost:4566) and `USE_SSL`, so
    `make run ARGS=--localstack` and `python -m infra.bootstrap --localstack` follow the same
    conventions as `awslocal` and LocalStack's docs instead of a URL we hard-code.
    """
    from localstack_client.config import get_service_endpoint

    url = get_service_endpoint("sqs", localstack_host=localstack_host)
    if not url:  # only if localstack-client ever drops SQS from its service table
        raise EndpointError("localstack-client has no SQS endpoint; set AWS_ENDPOINT_URL instead")
    return url


def ensure_endpoint(on_exit: Callable[[int], None] | None = None) -> AwsEndpoint:
    """Use AWS_ENDPOINT_URL if set (checked), else start moto (a child process) on YMERA_MOTO_PORT or a free port.

    `on_exit(returncode)` is called (from a watcher thread) if that child exits before `stop()`."""
    external = os.environ.get("AWS_ENDPOINT_URL")
    if external:
        check_endpoint(external)
        return AwsEndpoint(url=external, kind="external")
    raw_port = os.environ.get("YMERA_MOTO_PORT", "0")
    try:
        port = int(raw_port)
    except ValueError as exc:
        raise EndpointError(f"YMERA_MOTO_PORT must be a port number, got {raw_port!r}") from exc
    return spawn_moto(port=port, on_exit=on_exit)


#: the child's first line on stdout: "<READY_PREFIX> <port>".
READY_PREFIX = "ymera-moto-ready"
#: how long the parent waits for that line (moto's import takes ~1-2 s on this machine).
SPAWN_TIMEOUT_SECONDS = 30.0
#: after SIGTERM, how long the child gets before SIGKILL.
STOP_GRACE_SECONDS = 2.0


def spawn_moto(host: str = "127.0.0.1", port: int = 0, *,
               on_exit: Callable[[int], None] | None = None) -> AwsEndpoint:
    """Run moto's server in a child process (same config as `start_moto`); returns once it answers.

    The child is in this process group (a terminal's Ctrl-C reaches it, and it ignores it: the parent stops
    it last, once nothing uses it). `on_exit(returncode)` reports an exit that `stop()` did not ask for.
    Call it from a thread that lives as long as the child should (the main thread): Linux sends the
    parent-death signal when the thread that forked the child exits."""
    if port and not _port_is_free(host, port):
        raise EndpointError(f"YMERA_MOTO_PORT={port} is already in use on {host}")
    proc = subprocess.Popen([sys.executable, "-m", "infra.local.emulator", "--host", host, "--port", str(port),
                             "--parent-pid", str(os.getpid())],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=os.environ.copy())
    assert proc.stdout is not None
    line = _read_line(proc, SPAWN_TIMEOUT_SECONDS)
    if not line.startswith(READY_PREFIX):
        _terminate(proc)
        raise EndpointError(f"moto (child process) did not start: exit code {proc.poll()}, said {line!r}")
    real_port = int(line.split()[1])
    url = f"http://{host}:{real_port}"
    os.environ["AWS_ENDPOINT_URL"] = url
    stopping = threading.Event()

    def watch() -> None:
        code = proc.wait()
        if not stopping.is_set():
            log.error("the AWS emulator (moto, pid %d) exited unexpectedly with code %s", proc.pid, code)
            if on_exit is not None:
                on_exit(code)

    threading.Thread(target=watch, name="moto-watch", daemon=True).start()

    def stop() -> None:
        stopping.set()
        _terminate(proc)

    return AwsEndpoint(url=url, kind="moto", _stop=stop, pid=proc.pid)


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The child's first stdout line, or "" if it exits or stays silent for `timeout` s."""
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(proc.stdout.readline() if proc.stdout else b""),
                              daemon=True)
    reader.start()
    reader.join(timeout)
    return got[0].decode(errors="replace").strip() if got else ""


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()  # the child exits on EOF too
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _die_with_parent(parent_pid: int) -> None:
    """In the child: SIGTERM when the parent dies, whatever kills it (no orphaned moto). Linux only; elsewhere
    EOF on stdin still ends the child once the parent is gone."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if parent_pid and os.getppid() != parent_pid:  # it died before the line above ran
        os._exit(0)


def _serve(host: str, port: int, parent_pid: int) -> int:
    """The child: moto with Step Functions execution, until SIGTERM or EOF on stdin."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops us last
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # in-memory state only: nothing to flush
    _die_with_parent(parent_pid)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # it sets INFO itself: one line per request
    speed_up_sqs()  # a backlog of thousands of messages must not take seconds per receive
    cache_moto_dispatch()
    endpoint = start_moto(host, port, fast_sqs=True)  # sets MOTO_PORT (Step Functions calls back) in this process
    ready = f"{READY_PREFIX} {endpoint.url.rsplit(':', 1)[1]}\n"
    os.write(sys.stdout.fileno(), ready.encode())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # nothing else may fill the parent's pipe
    while sys.stdin.buffer.read(4096):  # the parent never writes: EOF = it closed the pipe or died
        pass
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m infra.local.emulator",
                                description="moto for `make run`, as a child process (spawn_moto)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--parent-pid", type=int, default=0, help="exit if this process is gone")
    args = p.parse_args(argv)
    try:
        return _serve(args.host, args.port, args.parent_pid)
    except EndpointError as exc:
        print(f"moto: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
