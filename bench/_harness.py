"""Shared pieces of the in-process API benchmarks (not a benchmark itself: run_all skips `_` files).

- `throwaway_database()`: a fresh Postgres database, migrated, dropped at the end (like tests/conftest.py).
- `configure()`: the environment a benchmark's Container reads (its own Redis key prefix, no real AWS).
- `event()`: an API Gateway REST (v1) Lambda proxy event, the input both Chalice and Mangum take.
- `Counters`: Redis round trips and SQL statements per request, to say *why* a figure is what it is.
- `quiet_stdout()`: the access log line is part of a request's cost, but not of this report.
- `seed_completed_task()`: a user, an agent and a completed task, through the real app and consumer.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PG_ADMIN_URL = os.environ.get("YMERA_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("YMERA_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
QUEUE_PREFIX = "ymera-bench"


@contextmanager
def throwaway_database() -> Iterator[str]:
    from sqlalchemy import create_engine, text

    from chalicelib.db.migrate import upgrade

    name = f"ymera_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def configure(database_url: str, **extra: str) -> str:
    """Set the environment for Settings(); returns the Redis key prefix (delete its keys at the end)."""
    prefix = f"ymera-bench-{uuid.uuid4().hex[:8]}:"
    huge = str(10**9)  # the limiter still runs its Redis script per request; it just never says no
    os.environ.update({
        "DATABASE_URL": database_url, "REDIS_URL": REDIS_URL, "YMERA_STAGE": "test",
        "YMERA_JWT_SECRET": "bench-secret-" + "b" * 40, "YMERA_REDIS_KEY_PREFIX": prefix,
        "YMERA_QUEUE_PREFIX": QUEUE_PREFIX, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        **{f"YMERA_RATE_LIMIT_{b}_CAPACITY": huge for b in ("USER", "IP", "LOGIN_ACCOUNT", "LOGIN_IP")},
        **extra,
    })
    os.environ.pop("AWS_ENDPOINT_URL", None)  # moto in-process, never a real endpoint
    return prefix


BENCH_VENV = ROOT / ".venv-bench"
BENCH_REQUIREMENTS = (ROOT / "bench" / "requirements.txt", ROOT / "requirements-dev.txt", ROOT / "requirements.txt")


def ensure_bench_env(script: str, *modules: str) -> None:
    """Re-run `script` in .venv-bench (creating or updating it from bench/requirements.txt first) unless
    `modules` (bench-only packages: FastAPI, Celery) import here."""
    import importlib
    import subprocess

    try:
        for name in modules:
            importlib.import_module(name)
        return
    except ImportError:
        if os.environ.get("YMERA_BENCH_REEXEC"):
            raise
    python = BENCH_VENV / "bin" / "python"
    stamp = BENCH_VENV / ".installed"
    if not stamp.exists() or any(r.stat().st_mtime > stamp.stat().st_mtime for r in BENCH_REQUIREMENTS):
        print(f"setting up {BENCH_VENV.name} from bench/requirements.txt ...", flush=True)
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "-r", str(BENCH_REQUIREMENTS[0])], check=True)
        stamp.touch()
    os.execve(str(python), [str(python), script, *sys.argv[1:]], {**os.environ, "YMERA_BENCH_REEXEC": "1"})


def drop_redis_keys(client: Any, prefix: str) -> None:
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        client.delete(key)


class LambdaContext:
    function_name = "ymera-bench-api"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:ymera-bench-api"
    aws_request_id = "bench-request"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def event(method: str, resource: str, path: str | None = None, *, body: Any = None, token: str | None = None,
          path_params: dict[str, str] | None = None) -> dict[str, Any]:
    """A REST API (v1) proxy event for `resource` (the route template) served at `path`, stage "api"."""
    path = path or resource
    headers = {"Host": "bench.example", "Accept": "application/json", "User-Agent": "ymera-bench"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return {
        "resource": resource, "path": path, "httpMethod": method, "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None, "multiValueQueryStringParameters": None,
        "pathParameters": path_params, "stageVariables": None,
        "requestContext": {"resourcePath": resource, "httpMethod": method, "path": f"/api{path}", "stage": "api",
                           "requestId": str(uuid.uuid4()), "accountId": "123456789012", "apiId": "bench",
                           "protocol": "HTTP/1.1", "requestTimeEpoch": int(time.time() * 1000),
                           "identity": {"sourceIp": "203.0.113.7", "userAgent": "ymera-bench"}},
        "body": json.dumps(body) if body is not None else None, "isBase64Encoded": False,
    }


def call(handler: Callable[[dict[str, Any], Any], dict[str, Any]], ev: dict[str, Any],
         expect: int = 200) -> dict[str, Any]:
    response = handler(ev, LambdaContext())
    assert response["statusCode"] == expect, (ev["httpMethod"], ev["path"], response["statusCode"],
                                              str(response.get("body"))[:300])
    return json.loads(response["body"]) if response.get("body") else {}


def timings(fn: Callable[[], Any], calls: int) -> list[float]:
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    return (f"median {statistics.median(ordered) * 1e3:8.3f} ms  "
            f"p95 {ordered[int(len(ordered) * 0.95) - 1] * 1e3:8.3f} ms")


@contextmanager
def quiet_stdout() -> Iterator[None]:
    """Send fd 1 to /dev/null: the JSON access log is still formatted and written, just not shown."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _sent_by_redis_py(frame: Any) -> bool:
    """Whether a send comes from redis-py itself (send_command, a pipeline, the handshake): already counted."""
    return frame is not None and "/redis/" in frame.f_code.co_filename.replace("\\", "/")


class Counters:
    """Redis round trips (commands + pipelines) and SQL statements, counted while `active`."""

    def __init__(self) -> None:
        self.redis = 0
        self.sql = 0
        self.active = False

    def redis_client(self, url: str) -> Any:
        import redis

        counters = self

        class CountingPipeline(redis.client.Pipeline):  # type: ignore[misc]
            def execute(self, *args: Any, **kwargs: Any) -> Any:
                counters.redis += counters.active
                return super().execute(*args, **kwargs)

        class CountingRedis(redis.Redis):  # type: ignore[misc]
            def execute_command(self, *args: Any, **kwargs: Any) -> Any:
                counters.redis += counters.active
                return super().execute_command(*args, **kwargs)

            def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
                return CountingPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)

        class CountingConnection(redis.Connection):  # type: ignore[misc]
            """A command its caller packed itself (the rate limiter's EVALSHA) never passes execute_command:
            counted where it is sent. Not counted again here: execute_command's and pipelines' own sends
            (their stack has those frames), the connection handshake nested in a send, a retried send."""

            last: Any = None

            def send_packed_command(self, command: Any, check_health: bool = True) -> Any:
                if counters.active and command is not self.last and not _sent_by_redis_py(sys._getframe(1)):
                    self.last = command
                    counters.redis += 1
                return super().send_packed_command(command, check_health)

        return CountingRedis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0,
                                      connection_class=CountingConnection)

    def watch_engine(self, engine: Any) -> None:
        from sqlalchemy import event as sa_event

        def count(*_: Any) -> None:
            self.sql += self.active

        sa_event.listen(engine, "before_cursor_execute", count)


def seed_completed_task(app: Any, username: str = "bench", password: str = "bench password") -> tuple[str, str]:
    """A user, an agent and a task completed by the real SQS consumer (inside moto's mock_aws);
    returns (access token, task id)."""
    import boto3

    from functions.agent_consumer import handler as consume
    from infra.bootstrap import bootstrap

    bootstrap(boto3.client("sqs", region_name="us-east-1"), QUEUE_PREFIX)
    call(app, event("POST", "/auth/register",
                    body={"username": username, "email": f"{username}@example.com", "password": password}), 201)
    token = call(app, event("POST", "/auth/login", body={"username": username, "password": password}))["access_token"]
    agent = call(app, event("POST", "/agents", body={"name": "bench", "type": "validation"}, token=token), 201)
    task = call(app, event("POST", "/tasks", token=token, body={
        "agent_id": agent["id"], "title": "bench", "input_data": {"schema": {"type": "object"}, "payload": {}}}), 202)
    record = {"messageId": "m1", "receiptHandle": "rh", "eventSource": "aws:sqs", "awsRegion": "us-east-1",
              "body": json.dumps({"task_id": task["id"], "agent_type": "validation"}),
              "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {}, "md5OfBody": "",
              "eventSourceARN": f"arn:aws:sqs:us-east-1:123456789012:{QUEUE_PREFIX}-agent-validation"}
    assert consume({"Records": [record]}, LambdaContext()) == {"batchItemFailures": []}
    return token, task["id"]
