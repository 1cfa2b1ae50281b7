"""Every agent run inside a wall-clock and memory budget, and every result inside a size cap.

Two ways to run, chosen by the agent (`Agent.runs_isolated`):

- **Isolated** (CPU-bound pure agents: validation, examination, security's code/text modes — no database, no
  provider): the run happens in a forked child with `RLIMIT_AS` set to what the process already maps plus
  the memory budget. The parent waits on a pipe with the deadline; a child still running then is killed
  (SIGKILL) and the task fails with TIME_LIMIT_EXCEEDED; a child that runs out of memory fails it with
  MEMORY_LIMIT_EXCEEDED. A C-level loop (a regular expression, a parser) cannot outlive its budget, and
  the batch it belongs to is never killed with it. The child gets no AgentContext: it must not touch the
  database connections it inherited, and leaves with `os._exit` so it never closes them.
- **In-process** (agents that use the database or a provider): the same wall-clock budget as a SIGALRM
  timer (main thread only; a thread — the local runtime — runs without it). The timer interrupts Python
  code, not a C call; those agents' own work is linear in capped input and their model calls carry the
  provider's total deadline, so the timer is a backstop. Their memory is bounded by their input caps.

Small inputs run in-process even when the agent is isolated: the input caps already bound their work, and
a fork would cost more than the run (`isolate_min_bytes`; measured in bench/agent_limits.py).
"""

from __future__ import annotations

import json
import os
import pickle
import select
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from chalicelib.errors import AgentError, MemoryLimitExceededError, WallClockExceededError

if TYPE_CHECKING:
    from types import FrameType

    from pydantic import BaseModel

    from chalicelib.agents.base import Agent, AgentContext, AgentOutput

#: used when no settings reach the run (unit tests, tools): the Settings defaults.
DEFAULT_WALL_SECONDS = 15.0
DEFAULT_PROVIDER_WALL_SECONDS = 240.0
DEFAULT_MEMORY_BYTES = 256 * 1024 * 1024
DEFAULT_OUTPUT_MAX_BYTES = 256 * 1024
DEFAULT_ISOLATE_MIN_BYTES = 16 * 1024
#: room left in a truncated output for the marker itself.
_MARKER_ROOM = 1024
_READ_CHUNK = 1 << 16


class AgentCrashedError(RuntimeError):
    """An isolated run ended with an unexpected exception or died: retried like any crash in-process."""


@dataclass(frozen=True)
class Budget:
    wall_seconds: float = DEFAULT_WALL_SECONDS
    memory_bytes: int = DEFAULT_MEMORY_BYTES
    output_max_bytes: int = DEFAULT_OUTPUT_MAX_BYTES
    isolate_min_bytes: int = DEFAULT_ISOLATE_MIN_BYTES


def budget_for(agent: Agent, ctx: AgentContext | None) -> Budget:
    """The budget from the settings the task's context carries (defaults without one)."""
    settings = ctx.settings if ctx is not None else None
    if settings is None:
        wall = DEFAULT_PROVIDER_WALL_SECONDS if agent.provider_backed else DEFAULT_WALL_SECONDS
        return Budget(wall_seconds=wall)
    wall = settings.agent_provider_wall_seconds if agent.provider_backed else settings.agent_wall_seconds
    return Budget(wall_seconds=wall, memory_bytes=settings.agent_memory_bytes,
                  output_max_bytes=settings.agent_output_max_bytes,
                  isolate_min_bytes=settings.agent_isolate_min_bytes)


def run_task_agent(agent: Agent, data: BaseModel, config: Mapping[str, Any], ctx: AgentContext | None) -> AgentOutput:
    """What the task processor calls instead of `agent.run`: bounded run, capped output."""
    budget = budget_for(agent, ctx)
    isolate = agent.runs_isolated(data) and _input_bytes(data) >= budget.isolate_min_bytes
    result = run_bounded(agent, data, config, ctx, budget.wall_seconds, budget.memory_bytes, isolate=isolate)
    return cap_output(result, budget.output_max_bytes)


def run_bounded(agent: Agent, data: BaseModel, config: Mapping[str, Any], ctx: AgentContext | None,
                wall_seconds: float, memory_bytes: int, *, isolate: bool | None = None) -> AgentOutput:
    """Run `agent` within the budget; raise WallClockExceededError / MemoryLimitExceededError past it."""
    if isolate is None:
        isolate = agent.runs_isolated(data)
    if isolate and hasattr(os, "fork"):
        return _run_in_child(agent, data, config, wall_seconds, memory_bytes)
    with _alarm(wall_seconds):
        try:
            return agent.run(data, config, ctx)
        except MemoryError as exc:
            raise _memory_error(memory_bytes) from exc


# --- output cap --------------------------------------------------------------------------------------


def json_size(value: Any) -> int:
    # surrogatepass: a lone surrogate an agent returned is replaced when stored (services/results.py), not here
    text = json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False)
    return len(text.encode("utf-8", "surrogatepass"))


def cap_output(output: AgentOutput, max_bytes: int) -> AgentOutput:
    """`output.output` as is when it fits in `max_bytes` of JSON, else a truncated copy with a marker.

    The truncated copy keeps, in order, the top-level fields that still fit and the leading items of a list
    that does not; `{"truncated": true, "original_bytes", "max_bytes", "omitted": {field: ...}}` says what
    was cut (`{"kept": k, "total": n}` for a list, `{"bytes": n}` for anything else).
    """
    original = json_size(output.output)
    if original <= max_bytes:
        return output
    room = max(max_bytes - _MARKER_ROOM, 0)
    kept: dict[str, Any] = {}
    omitted: dict[str, Any] = {}
    for key, value in output.output.items():
        size = json_size(value) + len(key) + 4
        if size <= room:
            kept[key] = value
            room -= size
        elif isinstance(value, list):
            items, room = _list_prefix(value, room - len(key) - 6)
            kept[key] = items
            omitted[key] = {"kept": len(items), "total": len(value)}
        else:
            omitted[key] = {"bytes": size}
    marked = {**kept, "truncated": True, "original_bytes": original, "max_bytes": max_bytes, "omitted": omitted}
    return replace(output, output=marked, metrics={**output.metrics, "output_truncated": True,
                                                   "output_original_bytes": original})


def _list_prefix(items: list[Any], room: int) -> tuple[list[Any], int]:
    kept = []
    for item in items:
        size = json_size(item) + 1
        if size > room:
            break
        kept.append(item)
        room -= size
    return kept, max(room, 0)


# --- isolated run ------------------------------------------------------------------------------------


def _run_in_child(agent: Agent, data: BaseModel, config: Mapping[str, Any], wall_seconds: float,
                  memory_bytes: int) -> AgentOutput:
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's lines run in another process
        os.close(read_end)
        _child(agent, data, config, memory_bytes, write_end)
    os.close(write_end)
    try:
        payload = _read_until(read_end, pid, time.monotonic() + wall_seconds, wall_seconds)
    finally:
        os.close(read_end)
    _, status = os.waitpid(pid, 0)
    return _outcome(payload, status, memory_bytes)


def _child(agent: Agent, data: BaseModel, config: Mapping[str, Any], memory_bytes: int,
           write_end: int) -> None:  # pragma: no cover - runs in the forked child
    code = 0
    try:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        _limit_memory(memory_bytes)
        try:
            message: tuple[Any, ...] = ("ok", agent.run(data, config, None))
        except MemoryError:
            message = ("memory",)
        except AgentError as exc:
            message = ("agent_error", type(exc), exc.message, exc.details)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which retries it as a crash
            message = ("crash", type(exc).__name__, str(exc)[:500])
        try:
            blob = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        except MemoryError:
            blob = pickle.dumps(("memory",))
        view = memoryview(blob)
        while view:
            written = os.write(write_end, view)
            view = view[written:]
    except MemoryError:
        code = 3
    except BaseException:  # noqa: BLE001 - a forked child must never return into the parent's code
        code = 4
    finally:
        # No atexit handlers, no finalizers: the inherited database and Redis sockets stay the parent's.
        os._exit(code)


def _read_until(fd: int, pid: int, deadline: float, wall_seconds: float) -> bytes:
    chunks: list[bytes] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            _kill(pid)
            raise WallClockExceededError(
                f"the agent ran longer than its {wall_seconds:g} s budget and was stopped",
                {"wall_seconds": wall_seconds})
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, _READ_CHUNK)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # it ended between the deadline and the kill; reaped below either way
    os.waitpid(pid, 0)


def _outcome(payload: bytes, status: int, memory_bytes: int) -> AgentOutput:
    if not payload:
        # Died without a word: an allocation that failed outside Python (abort, segfault) or the exit codes above.
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3:
            raise _memory_error(memory_bytes)
        raise AgentCrashedError(f"the isolated agent run died without a result (wait status {status})")
    message = pickle.loads(payload)  # noqa: S301 - written by our own forked child, never by a user
    kind = message[0]
    if kind == "ok":
        result: AgentOutput = message[1]
        return result
    if kind == "memory":
        raise _memory_error(memory_bytes)
    if kind == "agent_error":
        raise _rebuild(message[1], message[2], message[3])
    raise AgentCrashedError(f"{message[1]}: {message[2]}")


def _rebuild(cls: type[AgentError], text: str, details: dict[str, Any]) -> AgentError:
    # Subclasses may take other constructor arguments; the message and details are what the task records.
    exc = cls.__new__(cls)
    Exception.__init__(exc, text)
    exc.message, exc.details = text, details
    return exc


def _memory_error(memory_bytes: int) -> MemoryLimitExceededError:
    return MemoryLimitExceededError(
        f"the agent needed more than its {memory_bytes // (1024 * 1024)} MiB memory budget and was stopped",
        {"memory_bytes": memory_bytes})


def _limit_memory(memory_bytes: int) -> None:  # pragma: no cover - runs in the forked child
    import resource

    mapped = _mapped_bytes()
    if mapped is None:
        return
    limit = mapped + memory_bytes
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _mapped_bytes() -> int | None:
    """Address space the process maps now (the fork's starting point); None where /proc is absent."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def _input_bytes(data: BaseModel) -> int:
    return len(data.model_dump_json().encode())


# --- in-process deadline -----------------------------------------------------------------------------


@contextmanager
def _alarm(wall_seconds: float) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expired(signum: int, frame: FrameType | None) -> None:
        raise WallClockExceededError(f"the agent ran longer than its {wall_seconds:g} s budget and was stopped",
                                     {"wall_seconds": wall_seconds})

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, wall_seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
