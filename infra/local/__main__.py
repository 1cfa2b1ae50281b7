"""`python -m infra.local`: run YMERA on this machine (what `make run` calls).

Startup order matters: the environment must be complete before the app is
imported (settings are read once, at import), and the queues must exist before
the runner resolves them.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from infra.local import environment
from infra.local.emulator import EndpointError
from infra.local.functions import FunctionsError
from infra.local.runner import rate_minutes

# Logger names must not contain "ymera": Powertools' Logger(service="ymera") puts a
# filter on the root handlers that drops every record whose logger name contains it.
log = logging.getLogger("infra.local")


class _Shutdown(Exception):
    """Raised in the main thread by SIGINT/SIGTERM to unwind into cleanup."""


class StartupError(RuntimeError):
    """A missing piece with a known fix: reported in one line, no traceback."""


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m infra.local", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1", help="API bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=int(os.environ.get("YMERA_PORT", "8000")),
                   help="API port (default $YMERA_PORT or 8000)")
    p.add_argument("--state-dir", default=".ymera", help="local state: Postgres data, JWT secret")
    p.add_argument("--localstack", action="store_true",
                   help="use a running LocalStack ($LOCALSTACK_HOST, default localhost:4566) as the AWS endpoint")
    p.add_argument("--no-runner", action="store_true",
                   help="serve the API only; do not consume queues or run schedules")
    return p.parse_args(argv)


def _install_signal_handlers() -> None:
    stopping = False

    def handler(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:  # a second Ctrl-C while cleanup hangs: leave now
            os._exit(130)
        stopping = True
        raise _Shutdown(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


class _StopTogether(contextlib.AbstractContextManager["_StopTogether"]):
    """Stop a group of components concurrently on exit (Ctrl-C must be done within 3 s).

    Two groups, in order: what takes work (API server, runner: its pollers finish a
    long poll of up to 1 s), then what that work used (Postgres's shutdown checkpoint,
    the moto child process, Redis). Stopping one at a time summed to 3-4 s.
    """

    def __init__(self) -> None:
        self._stops: list[tuple[str, Callable[[], None]]] = []

    def add(self, what: str, stop: Callable[[], None]) -> None:
        self._stops.append((what, stop))

    def __exit__(self, *exc: object) -> None:
        threads = [threading.Thread(target=self._timed, args=item, name=f"stop:{item[0]}")
                   for item in reversed(self._stops)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    @staticmethod
    def _timed(what: str, stop: Callable[[], None]) -> None:
        started = time.monotonic()
        try:
            stop()
        except Exception:  # one failing stop must not keep the others from running
            log.exception("stopping %s failed", what)
            return
        log.debug("%s stopped in %.2fs", what, time.monotonic() - started)


def _refuse_sqlite(url: str) -> None:
    # SQLite was the default until the monitoring agent's health check deadlocked on the
    # database-wide write lock its own task held (30 s of stalled API calls, a false alert).
    # Postgres is what runs in production (row locks, SKIP LOCKED, JSONB, advisory locks), and
    # now starts embedded in about a second, so `make run` no longer offers a second engine.
    if url.startswith("sqlite"):
        raise StartupError(
            "DATABASE_URL=sqlite:... is no longer supported by `make run`: unset DATABASE_URL to use "
            "the embedded Postgres, or point it at a Postgres server (postgresql+psycopg://...)")


def _migrate() -> None:
    try:
        from chalicelib.db import migrate  # type: ignore[attr-defined,unused-ignore]
    except ModuleNotFoundError as exc:
        if exc.name not in {"chalicelib.db.migrate", "chalicelib.db"}:
            raise  # migrate.py exists but one of its imports is missing: show the traceback
        raise StartupError(f"cannot run migrations: {exc} (chalicelib/db/migrate.py missing?)") from exc
    migrate.upgrade(os.environ["DATABASE_URL"])


def _bootstrap(prefix: str) -> dict[str, str]:
    from infra.local.emulator import sqs_client

    try:
        from infra.bootstrap import bootstrap
    except ModuleNotFoundError as exc:
        if exc.name != "infra.bootstrap":
            raise
        raise StartupError(f"cannot create queues: {exc} (infra/bootstrap.py missing?)") from exc
    # Bootstrap's client (the runner, in the functions' process, builds its own).
    sqs = sqs_client()
    # Optional: a short visibility timeout makes failed records retry in seconds
    # locally (default: the manifest's, as deployed).
    vt = os.environ.get("YMERA_LOCAL_VISIBILITY_TIMEOUT")
    queues = bootstrap(sqs, prefix, visibility_timeout=int(vt) if vt else None)
    import boto3

    from infra.bootstrap import ensure_alert_topic

    # The monitoring agent and functions/monitor.py publish alerts here (as to AlertTopic on AWS).
    ensure_alert_topic(boto3.client("sns", endpoint_url=os.environ.get("AWS_ENDPOINT_URL"),
                                    region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1")), prefix)
    from infra.bootstrap import ensure_workflow_role

    # Workflow state machines run as this role (the template's WorkflowRole on AWS); the API passes it.
    iam = boto3.client("iam", endpoint_url=os.environ.get("AWS_ENDPOINT_URL"),
                       region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    os.environ.setdefault("YMERA_WORKFLOW_ROLE_ARN", ensure_workflow_role(iam, sqs, prefix))
    return queues


def _apply_function_env(specs: list[Any]) -> None:
    # All handlers share this process, so per-function env is process-wide:
    # first value wins and a conflicting one is reported rather than hidden.
    for spec in specs:
        for key, value in spec.env.items():
            if os.environ.setdefault(key, value) != value:
                log.warning("%s: env %s differs from the process value; using the latter",
                            spec.name, key)


def _banner(api_url: str, aws: Any, queues: dict[str, str], specs: list[Any],
            state_dir: Path, runner_on: bool, seconds: float, embedded_db: bool, ws: Any = None,
            functions: Sequence[tuple[str, Any]] = ()) -> str:
    mask = environment.mask_url
    lines = [
        "",
        f"YMERA local runtime ready in {seconds:.2f}s",
        f"  API          {api_url}   (try {api_url}/health)",
        *([f"  WebSocket    {ws.url}/?token=<access token>   (Management API {ws.management_url})"]
          if ws is not None else []),
        f"  AWS endpoint {aws.url}   ("
        + (f"embedded moto, child process {aws.pid}" if aws.pid else "embedded moto" if aws.kind == "moto"
           else "external") + ")",
        f"  Database     {mask(os.environ['DATABASE_URL'])}"
        + ("   (embedded Postgres)" if embedded_db else ""),
        f"  Redis        {mask(os.environ.get('REDIS_URL', ''))}",
        f"  State dir    {state_dir}",
        f"  Queues       {', '.join(sorted(queues)) or '(none)'}",
    ]
    if runner_on:
        for label, child in functions:
            what = ("the agent-*-bulk consumers: heavy owners' backlogs, apart from the rest" if label == "bulk lanes"
                    else "the runner and every handler below" + (" but the bulk lanes" if len(functions) > 1 else ""))
            lines.append(f"  {label.capitalize():<12} child process {child.pid} ({what})")
        for spec in specs:
            every = float(os.environ.get("YMERA_LOCAL_SCHEDULE_SECONDS", "2")) * rate_minutes(spec.schedule or "")
            src = f"queue {spec.queue.name(os.environ['YMERA_QUEUE_PREFIX'])}" if spec.queue else \
                f"looping, re-invoked at once ({spec.schedule} when deployed)" if spec.loops else \
                f"schedule every {every:g}s ({spec.schedule} when deployed)"
            lines.append(f"  Function     {spec.name:<20} {spec.handler}  <- {src}")
    else:
        lines.append("  Runner       disabled (--no-runner)")
    lines += ["Press Ctrl-C to stop.", ""]
    return "\n".join(lines)


def _start_gateway(host: str, api_port: int, prefix: str) -> Any:
    """The local WebSocket gateway on API port + 1 (Management API on + 2), or where YMERA_WS_PORT says.
    Without YMERA_WS_PORT, a busy default falls back to free ports (the banner shows them)."""
    from infra.local.wsgateway import LocalWebSocketGateway, default_ports

    region = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    ws_port, management_port = default_ports(api_port)
    try:
        return LocalWebSocketGateway({}, host, ws_port, management_port, function_prefix=prefix, region=region).start()
    except OSError as exc:
        if os.environ.get("YMERA_WS_PORT"):
            raise StartupError(f"WebSocket gateway: {exc} (YMERA_WS_PORT={ws_port})") from exc
        log.warning("WebSocket gateway: %s; using free ports instead", exc)
    try:
        return LocalWebSocketGateway({}, host, 0, 0, function_prefix=prefix, region=region).start()
    except OSError as exc:
        raise StartupError(f"WebSocket gateway: {exc}") from exc


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    with contextlib.ExitStack() as stack:  # unwinds in reverse start order
        state_dir = environment.prepare_state_dir(args.state_dir)
        environment.apply_defaults(state_dir)
        environment.apply_chalice_config_env(Path(__file__).resolve().parents[2])
        _refuse_sqlite(os.environ.get("DATABASE_URL", ""))
        from infra.local.postgres import EmbeddedPostgresError, ensure_postgres

        try:
            pg = ensure_postgres(state_dir)
        except EmbeddedPostgresError as exc:
            raise StartupError(str(exc)) from exc
        # Stores and the endpoint stop together, after everything that uses them (see _stop_together).
        stores = stack.enter_context(_StopTogether())
        if pg is not None:
            stores.add("embedded Postgres", pg.stop)
        redis = environment.ensure_redis()
        if redis is not None:
            stores.add("embedded Redis", redis.stop)
            log.info("embedded Redis on %s", redis.url)

        from infra.local.emulator import ensure_endpoint, localstack_url

        if args.localstack:
            os.environ["AWS_ENDPOINT_URL"] = localstack_url()
        def stop_all_when(flag: threading.Event) -> Any:
            def died_now(_code: int) -> None:  # (the watcher logged it) the platform cannot work without it
                flag.set()
                os.kill(os.getpid(), signal.SIGTERM)

            return died_now

        died, functions_died = threading.Event(), threading.Event()
        emulator_died = stop_all_when(died)  # nothing works without SQS

        aws = ensure_endpoint(on_exit=emulator_died)
        stores.add("AWS endpoint", aws.stop)
        log.info("AWS endpoint %s (%s)", aws.url, aws.kind)

        _migrate()
        log.info("database migrated")
        prefix = os.environ["YMERA_QUEUE_PREFIX"]
        queues = _bootstrap(prefix)
        log.info("bootstrapped %d queue(s)", len(queues))

        from infra import manifest
        from infra.local.functions import triggered
        from infra.local.server import ApiServer, load_app

        specs = triggered(manifest.functions())
        _apply_function_env(specs)
        front = stack.enter_context(_StopTogether())
        # Before the app is imported (settings are read once): where clients connect, where the notifier posts.
        # The gateway listens now and learns the app's handlers below (until then it refuses connects: 503).
        ws = _start_gateway(args.host, args.port, prefix)
        front.add("WebSocket gateway", ws.stop)
        os.environ.setdefault("YMERA_WEBSOCKET_URL", ws.url)
        os.environ.setdefault("YMERA_WEBSOCKET_MANAGEMENT_URL", ws.management_url)
        functions: list[tuple[str, Any]] = []
        if not args.no_runner:
            from infra.local.functions import process_groups, spawn_functions

            # The handlers run in their own processes (infra/local/functions.py): a consumer's work must not
            # compete with the API for this process's GIL (issue #14), nor the bulk lanes' backlog with every
            # other function, as on AWS where each has its own containers. They start now and import the
            # handlers while this process imports the app.
            for label, names, nice in process_groups(specs):
                child = spawn_functions(on_exit=stop_all_when(functions_died),  # no consumer would run
                                        lean_sqs=aws.kind == "moto", only=names, nice=nice)
                front.add(f"{label} (runner)", child.stop)
                functions.append((label, child))
        app_obj = load_app()
        from infra.local.wsgateway import handlers_of

        ws.handlers = handlers_of(app_obj)
        from chalicelib.observability import logger as app_logger
        from infra.local.logkeys import per_thread_log_keys

        per_thread_log_keys(app_logger)  # one process runs every function: keys per thread
        try:
            api = ApiServer(app_obj, args.host, args.port, function_name=f"{prefix}-api").start()
        except OSError as exc:
            raise StartupError(f"cannot listen on {args.host}:{args.port}: {exc}") from exc
        front.add("API server", api.stop)

        for _, child in functions:
            child.wait_ready()

        print(_banner(api.url, aws, queues, specs, state_dir, not args.no_runner,
                      time.monotonic() - started, pg is not None, ws, functions), flush=True)
        try:
            while True:
                time.sleep(3600)  # signals interrupt the sleep by raising _Shutdown
        except _Shutdown as sig:
            log.info("%s received, stopping", sig)
    if died.is_set():
        log.error("stopped: the AWS emulator exited")
        return 1
    if functions_died.is_set():
        log.error("stopped: the functions' process exited")
        return 1
    log.info("stopped cleanly")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        stream=sys.stderr, level=os.environ.get("YMERA_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    for noisy in ("werkzeug", "botocore", "boto3", "urllib3", "fakeredis", "pgserver", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)  # moto logs every request at INFO
    args = _parse_args(argv)
    _install_signal_handlers()
    try:
        return run(args)
    except _Shutdown as sig:  # stopped during startup: everything started was torn down
        log.info("%s received during startup; stopped", sig)
        return 0
    except (StartupError, EndpointError, FunctionsError) as exc:
        log.error("local runtime failed: %s", exc)
        return 1
    except Exception:  # a bug (in the app, a handler import, ...): the traceback is the point
        log.exception("local runtime failed")
        return 1


def _exit_now(code: int) -> None:
    """Exit without the interpreter's teardown once everything has been stopped explicitly.

    After "stopped cleanly", Python's module finalization spent 2-4 s in garbage collection
    (the app, boto3 and moto leave ~240k objects): the process group outlived the message
    by that long. atexit handlers still run, and output is flushed, before leaving.
    """
    import atexit

    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit_now(main())
