"""The functions' process: `make run` runs every `functions/` handler here, not in the API's process.

On AWS each function has its own containers, so a consumer never competes with the API for CPU. Under
`make run` the runner's threads and the handlers they invoke used to share the API's process and GIL: under
8 concurrent `POST /tasks` clients, every created task was then run in that same process, and the runner's
threads held about a fifth of its GIL (issue #14, `bench/api_load.py` with BENCH_PYSPY=1). This child
(`python -m infra.local.functions`, `spawn_functions`) runs the unchanged `EventSourceRunner` — long polls,
visibility timeouts, partial batch failures, DLQ redrive — on its own SQS client and database pool.

Like the emulator's child it ignores Ctrl-C (the parent stops it with SIGTERM, together with the API server),
exits when the parent dies (PR_SET_PDEATHSIG, EOF on its stdin), and an exit the parent did not ask for is
reported and stops the runtime. On SIGTERM it stops the runner the way Ctrl-C did in-process: a running handler
is waited for (up to `RUNNER_STOP_SECONDS`), a long poll is not.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from infra.local.runner import EventSourceRunner
    from infra.manifest import FunctionSpec

log = logging.getLogger("infra.local.functions")

#: the child's first stdout line once its runner polls: "<READY_PREFIX>".
READY_PREFIX = "ymera-functions-ready"
#: how long the parent waits for it (the handlers' imports: chalicelib, boto3, SQLAlchemy, ~2-3 s here).
SPAWN_TIMEOUT_SECONDS = 60.0
#: what the child's runner waits for running handlers on SIGTERM (EventSourceRunner.stop's default).
RUNNER_STOP_SECONDS = 5.0
#: the bulk lanes' child runs this much nicer than the others (`process_groups`): when a heavy owner's backlog and
#: everybody else's tasks want the same cores, the kernel serves the fast lanes first, as their separate
#: instances would be on AWS. tenant_fairness, 2026-12-03: B's task under A's 5,000 took 1.71x its idle p50 with
#: the bulk child at the same niceness, 1.46x at +10; A's throughput 0.91x and 1.00x of A alone.
BULK_LANES_NICE = 10
#: after SIGTERM, how long the parent waits before SIGKILL (the runner's wait, plus its own exit).
STOP_GRACE_SECONDS = RUNNER_STOP_SECONDS + 1.0


class FunctionsError(RuntimeError):
    """The functions' process did not start."""


class FunctionsProcess:
    """The functions' child: started by `spawn_functions`, ready once `wait_ready()` returned."""

    def __init__(self, proc: subprocess.Popen[bytes], on_exit: Callable[[int], None] | None) -> None:
        self._proc = proc
        self.pid = proc.pid
        self._on_exit = on_exit
        self._stopping = threading.Event()
        self._stopped = False

    def wait_ready(self, timeout: float = SPAWN_TIMEOUT_SECONDS) -> FunctionsProcess:
        """Until its runner polls; then an exit `stop()` did not ask for is reported to `on_exit(code)`."""
        from infra.local.emulator import _read_line

        line = _read_line(self._proc, timeout)
        if not line.startswith(READY_PREFIX):
            self.stop()
            raise FunctionsError(f"the functions' process did not start: exit code {self._proc.poll()}, "
                                 f"said {line!r} (its output is above)")
        threading.Thread(target=self._watch, name="functions-watch", daemon=True).start()
        return self

    def pause(self, timeout: float = SPAWN_TIMEOUT_SECONDS) -> None:
        """Stop the child's runner and keep the process (warm: its pools, caches and imports stay): what a
        running handler is doing is finished, what a long poll still brings is given back. For benchmarks
        that build a backlog, and tests; `resume()` starts the runner again."""
        self._command("pause", timeout)

    def resume(self, timeout: float = SPAWN_TIMEOUT_SECONDS) -> None:
        """Start the paused child's runner again; returns once it polls."""
        self._command("resume", timeout)

    def _command(self, word: str, timeout: float) -> None:
        from infra.local.emulator import _read_line

        assert self._proc.stdin is not None
        self._proc.stdin.write(f"{word}\n".encode())
        self._proc.stdin.flush()
        answer = _read_line(self._proc, timeout)
        if answer != f"{word}d":
            raise FunctionsError(f"the functions' process did not {word}: it said {answer!r}")

    def _watch(self) -> None:
        code = self._proc.wait()
        if not self._stopping.is_set():
            log.error("the functions' process (pid %d) exited unexpectedly with code %s", self.pid, code)
            if self._on_exit is not None:
                self._on_exit(code)

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._stopping.set()
            _terminate(self._proc)


def spawn_functions(*, on_exit: Callable[[int], None] | None = None, lean_sqs: bool = False,
                    only: Iterable[str] | None = None, stderr: IO[bytes] | None = None,
                    nice: int = 0) -> FunctionsProcess:
    """Start the functions' child with this process's environment (complete by now: endpoint, database,
    Redis, queue prefix, WebSocket URLs, the functions' own env); `wait_ready()` on the result. `lean_sqs`:
    the endpoint is `make run`'s own moto server, and the runner's receives and deletes go to it through
    `infra.local.lean_sqs` (YMERA_LOCAL_LEAN_SQS=0 keeps boto3 for them). `only`: these functions (manifest
    names) instead of every queue- or schedule-triggered one. `stderr`: where the child's log (and its handlers'
    output) goes, this process's stderr by default. `nice`: the child's CPU niceness above this process's (the
    bulk lanes' child: `BULK_LANES_NICE`).

    The child is in this process group (it ignores the terminal's Ctrl-C: `stop()` ends it). Call it from the
    main thread (the parent-death signal follows the thread that forked the child)."""
    argv = [sys.executable, "-m", "infra.local.functions", "--parent-pid", str(os.getpid())]
    if lean_sqs and os.environ.get("YMERA_LOCAL_LEAN_SQS", "1") != "0":
        argv.append("--lean-sqs")
    if only is not None:
        argv += ["--only", ",".join(only)]
    if nice:
        argv += ["--nice", str(nice)]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                            env=os.environ.copy())
    return FunctionsProcess(proc, on_exit)


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()  # the child stops its runner (waiting for running handlers), then exits
        try:
            proc.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


def triggered(specs: Iterable[FunctionSpec]) -> list[FunctionSpec]:
    """What the runner drives: functions a queue or a schedule triggers (`make run` migrates itself; the
    migrate function is the deploy's)."""
    return [spec for spec in specs if spec.queue is not None or spec.schedule]


def process_groups(specs: Iterable[FunctionSpec]) -> list[tuple[str, list[str], int]]:
    """How `make run` shares the functions out between children: (label, function names, niceness) per child.

    The bulk lanes (`agent-{type}-bulk`, docs/scheduling.md) get a child of their own, as on AWS each event
    source's instances are their own containers: a heavy owner's backlog keeps that child's GIL (and a core)
    busy, and the fast lanes' tasks (light owners, urgent work) must not queue behind it for the GIL. In one
    process, a critical task's create-to-claim under a 5,000-task backlog was 2.1x its idle median and 6.5x
    its idle p99 (bench/priority_backlog.py, 2026-12-03); with the lanes apart 1.7-2.4x and 1.7-3.1x (the load
    of two busy cores, docs/scheduling.md). The bulk lanes' child runs `BULK_LANES_NICE` nicer."""
    from infra.manifest import is_bulk_lane

    specs = list(specs)
    bulk = [spec.name for spec in specs if spec.queue is not None and is_bulk_lane(spec.queue)]
    in_bulk = frozenset(bulk)
    rest = [spec.name for spec in specs if spec.name not in in_bulk]
    groups = (("functions", rest, 0), ("bulk lanes", bulk, BULK_LANES_NICE))
    return [(label, names, nice) for label, names, nice in groups if names]


def select(specs: Iterable[FunctionSpec], only: Iterable[str] | None) -> list[FunctionSpec]:
    """`specs` named in `only` (all of them for None); a name the manifest does not have is an error."""
    specs = list(specs)
    if only is None:
        return specs
    wanted = set(only)
    unknown = wanted - {spec.name for spec in specs}
    if unknown:
        raise FunctionsError(f"no queue- or schedule-triggered function named {', '.join(sorted(unknown))}")
    return [spec for spec in specs if spec.name in wanted]


def _serve(parent_pid: int, lean_sqs: bool = False, only: Iterable[str] | None = None) -> int:
    """The child: the runner over every queue- or schedule-triggered function (or those in `only`), until
    SIGTERM or EOF on stdin."""
    from infra.local.emulator import _die_with_parent

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops us with the API
    # SIGTERM is taken by sigwait() below, in the main thread. Blocked before any thread starts (they inherit the
    # mask): a handler would run only once the main thread ran Python again, and a SIGTERM the kernel gave to
    # another thread left the main thread asleep in its read (stopping took 1.3-1.9 s instead of ~0.1 s).
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    _die_with_parent(parent_pid)
    logging.basicConfig(stream=sys.stderr, level=os.environ.get("YMERA_LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    for noisy in ("botocore", "boto3", "urllib3", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from infra import manifest
    from infra.local.emulator import sqs_client
    from infra.local.runner import EventSourceRunner, import_handler, pool_size_for

    specs = select(triggered(manifest.functions()), only)
    from chalicelib.observability import logger as app_logger
    from infra.local.logkeys import per_thread_log_keys

    per_thread_log_keys(app_logger)  # every function of this process logs its own keys
    for handler in sorted({spec.handler for spec in specs}):
        # Imported now (while the parent imports the app), not by each schedule's first run: those runs then
        # held up a Ctrl-C soon after startup by the seconds of their imports.
        import_handler(handler)
    sqs = sqs_client(max_pool_connections=pool_size_for(specs))
    if lean_sqs:  # the embedded emulator: the runner's per-invocation calls without botocore's per-call work
        from infra.local.lean_sqs import LeanSqs

        sqs = LeanSqs(sqs)
    runner = EventSourceRunner(sqs, os.environ["YMERA_QUEUE_PREFIX"], specs)
    ready = os.dup(sys.stdout.fileno())
    # Handlers' output (Powertools logs to stdout) goes where the parent's stderr goes, never into the pipe.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    runner.start()  # resolves every queue: a missing one fails here, before the ready line
    os.write(ready, f"{READY_PREFIX}\n".encode())
    threading.Thread(target=_commands, args=(runner, ready), name="functions-stdin", daemon=True).start()
    signal.sigwait({signal.SIGTERM})  # from the parent's stop(), PR_SET_PDEATHSIG, or EOF on stdin
    runner.stop(RUNNER_STOP_SECONDS)
    sys.stderr.flush()
    os._exit(0)  # no interpreter teardown (seconds of garbage collection, see infra.local.__main__._exit_now)


def _commands(runner: EventSourceRunner, answers: int) -> None:
    """The parent's lines on stdin: "pause" (stop the runner, keep the process), "resume" (start it again),
    each answered on `answers` ("paused", "resumed") once done. EOF = the parent closed the pipe or died."""
    for line in sys.stdin.buffer:
        word = line.strip().decode(errors="replace")
        if word == "pause":
            runner.stop(RUNNER_STOP_SECONDS)
        elif word == "resume":
            runner.start()
        else:
            log.warning("unknown command %r from the parent; ignored", word)
            continue
        os.write(answers, f"{word}d\n".encode())
    os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m infra.local.functions",
                                description="the functions' runner for `make run`, as a child process")
    p.add_argument("--parent-pid", type=int, default=0, help="exit if this process is gone")
    p.add_argument("--lean-sqs", action="store_true",
                   help="the endpoint is make run's own moto server: receive and delete through infra.local.lean_sqs")
    p.add_argument("--only", default=None, help="comma-separated function names (default: every triggered one)")
    p.add_argument("--nice", type=int, default=0, help="add this to the process's niceness (lower CPU priority)")
    args = p.parse_args(argv)
    if args.nice:
        os.nice(args.nice)
    return _serve(args.parent_pid, args.lean_sqs, None if args.only is None else args.only.split(","))


if __name__ == "__main__":
    sys.exit(main())
