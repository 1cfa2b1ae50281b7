"""The API under 8 concurrent clients on `make run` (python -m infra.local) with this machine's Postgres (a
throwaway database) and Redis (own key prefix): requests/s and p50/p99 of

  - GET /health          liveness (no auth, no Redis, no SQL): the server's floor
  - GET /tasks/{id}      authenticated, a completed task (served from the cache: one Redis round trip)
  - POST /tasks          authenticated, a validation task (insert + outbox + SQS send; the runner then runs it)

measured in the same run, phase after phase, BENCH_ROUNDS rounds (default 3) of BENCH_SECONDS each (default 3)
per endpoint, BENCH_CLIENTS threads (default 8), each with its own keep-alive http.client connection, after an
unmeasured second of GET /health and one of POST /tasks (whose tasks are let finish first).
Budget (issue #14): POST /tasks req/s >= 1/4 of the cached GET's (measured 1/22 before: 16-19 req/s, p99 ~1 s).
The POST phase runs once more with each client a different user (information, no budget: whether one user's
writes, which take turns on that user's event-counter row, are what bounds the rate).
Also printed: this run's CPU (utime + stime from /proc) per request of each phase, by process: the API, the
functions (runner, consumers, notifier), the emulator, the Postgres backends of its database, Redis (shared with
anything else running), the bench's own clients. Two cores bound the POST rate at about 2 s / that total.

BENCH_PORT (default: a free one; the WebSocket gateway takes +1 and +2, or free ones). BENCH_PYSPY=1 (or a
directory to keep the raw stacks in) also records the runtime with py-spy (on PATH) during the POST phases
and prints where the GIL went per thread (`--gil --threads`) and in which process: the API's, the functions' or the
emulator's (BENCH_PYSPY_WALL=1: every thread's stacks, waiting ones too).

Run: /work/main/.venv/bin/python bench/api_load.py
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import _harness  # noqa: E402 - needs the path above
import _platform  # noqa: E402

CLIENTS = int(os.environ.get("BENCH_CLIENTS", "8"))
#: the POST phase again with each client a different user (information, no budget)
MANY_USERS = "POST /tasks, a user per client"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))
#: the unmeasured warm-up of GET /health and of POST /tasks
WARM_SECONDS = 1.0
PORT = int(os.environ.get("BENCH_PORT", "0"))  # 0: a free port
BUDGET_POST_VS_GET = 0.25
PASSWORD = "correct horse battery"
TASK = {"schema": {"type": "object", "required": ["name"]}, "payload": {"name": "x"}}


class Runtime(_platform.Runtime):
    """`make run` (bench/_platform.py) with the access log left on, as a terminal would take it, and keep-alive
    clients of its own."""

    def __init__(self, database_url: str, prefix: str) -> None:
        super().__init__(database_url, prefix, port=PORT, POWERTOOLS_LOG_LEVEL="INFO")
        self.database = database_url.rsplit("/", 1)[1]

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def output(self, tail: int = 4000) -> str:
        return self.tail(lines=60)[-tail:]


def request(conn: http.client.HTTPConnection, method: str, path: str, body: Any = None,
            token: str | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def user(rt: Runtime) -> tuple[str, str]:
    """A user and a validation agent of theirs: (token, agent id)."""
    conn, name = rt.connect(), f"load{uuid.uuid4().hex[:8]}"
    status, body = request(conn, "POST", "/auth/register",
                           {"username": name, "email": f"{name}@example.com", "password": PASSWORD})
    assert status == 201, body
    status, body = request(conn, "POST", "/auth/login", {"username": name, "password": PASSWORD})
    assert status == 200, body
    token = json.loads(body)["access_token"]
    status, body = request(conn, "POST", "/agents", {"name": "load", "type": "validation"}, token)
    assert status == 201, body
    return token, json.loads(body)["id"]


def seed(rt: Runtime) -> tuple[str, str, str]:
    """A user, a validation agent and one completed task: (token, agent id, task id)."""
    token, agent_id = user(rt)
    conn = rt.connect()
    status, body = request(conn, "POST", "/tasks", {"agent_id": agent_id, "title": "seed", "input_data": TASK}, token)
    assert status == 202, body
    task_id = json.loads(body)["id"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, body = request(conn, "GET", f"/tasks/{task_id}", token=token)
        if json.loads(body)["status"] == "completed":
            return token, agent_id, task_id
        time.sleep(0.1)
    raise RuntimeError(f"the seed task did not complete: {body!r}")


def phase(rt: Runtime, method: str, path: str, body: Any, token: str | list[tuple[str, str]] | None,
          expect: int, seconds: float = SECONDS) -> tuple[int, float, list[float], int]:
    """CLIENTS threads for `seconds`: (requests, elapsed, latencies, errors). `token` a list of (token, agent id):
    client i is user i (modulo), its POST body naming that user's agent."""
    latencies: list[list[float]] = [[] for _ in range(CLIENTS)]
    errors = [0] * CLIENTS
    start = threading.Barrier(CLIENTS + 1)
    stop_at = [0.0]

    def client(i: int) -> None:
        conn = rt.connect()
        conn.connect()
        mine_token, mine_body = token, body
        if isinstance(token, list):
            mine_token, agent_id = token[i % len(token)]
            mine_body = {**body, "agent_id": agent_id}
        start.wait()
        clock, mine = time.perf_counter, latencies[i]
        while clock() < stop_at[0]:
            t = clock()
            try:
                status, _ = request(conn, method, path, mine_body, mine_token)
            except (OSError, http.client.HTTPException):
                errors[i] += 1
                conn.close()
                conn = rt.connect()
                continue
            mine.append(clock() - t)
            if status != expect:
                errors[i] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    start.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    flat = [x for lat in latencies for x in lat]
    return len(flat), elapsed, flat, sum(errors)


def drained(rt: Runtime, token: str, timeout: float = 60.0) -> None:
    """Wait until the user has no task left to run."""
    conn, deadline = rt.connect(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = 0
        for status in ("pending", "queued", "processing"):
            code, body = request(conn, "GET", f"/tasks?status={status}&limit=1", token=token)
            if code != 200:
                raise RuntimeError(f"GET /tasks?status={status}: {code} {body!r}")
            left += len(json.loads(body)["items"])
        if not left:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the warm-up's tasks did not finish in {timeout:g}s")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def pyspy(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy")
    if exe is None:
        print("  BENCH_PYSPY: py-spy is not on PATH (pip install py-spy into any venv); not profiling")
        return None
    # BENCH_PYSPY_WALL=1: every thread's stacks, waiting ones too (where a request's time goes), not the GIL's.
    what = "--idle" if os.environ.get("BENCH_PYSPY_WALL") else "--gil"
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--subprocesses", what, "--threads",
                             "--nonblocking", "--rate", "200", "--duration", str(max(1, int(seconds))),
                             "--format", "raw", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def cpu_snapshot() -> dict[int, tuple[int, str]]:
    """utime + stime (clock ticks) and command line of every process on the machine, by pid."""
    out: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[int(entry.name)] = (int(fields[11]) + int(fields[12]), cmd or stat.split("(", 1)[1].split(")")[0])
    return out


def cpu_kind(pid: int, cmd: str, runtime: set[int], database: str) -> str | None:
    """What a process is to this run, or None when it is not ours (another bench, another database's backend)."""
    if pid == os.getpid():
        return "bench clients"
    if pid in runtime:
        for mark, kind in (("infra.local.emulator", "emulator"), ("infra.local.functions", "functions")):
            if mark in cmd:
                return kind
        return "API"
    if cmd.startswith("postgres:") and f" {database} " in cmd:  # a backend of this run's database
        return "Postgres"
    if "redis-server" in cmd:  # shared with whatever else runs on the machine
        return "Redis"
    return None


def cpu_delta(before: dict[int, tuple[int, str]], after: dict[int, tuple[int, str]], runtime: set[int],
              database: str) -> Counter[str]:
    """CPU seconds per kind of process of this run between two snapshots."""
    hz = os.sysconf("SC_CLK_TCK")
    spent: Counter[str] = Counter()
    for pid, (ticks, cmd) in after.items():
        used = ticks - before.get(pid, (0, ""))[0]
        kind = cpu_kind(pid, cmd, runtime, database) if used > 0 else None
        if kind is not None:
            spent[kind] += used / hz
    return spent


def gil_share(raws: list[Path], children: dict[int, str]) -> None:
    """Per thread (and per process: the API's, or one of its children named in `children`) share of the samples
    in which a thread held the GIL."""
    threads: Counter[str] = Counter()
    processes: Counter[str] = Counter()
    for line in (line for raw in raws for line in raw.read_text().splitlines()):
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit():
            continue
        # --subprocesses: "process <pid>:<cmdline>" frames down to the sampled process (the emulator and the
        # functions are the API's children, so their stacks start with both), then --threads' "thread (<id>): <name>".
        depth = max((i for i, f in enumerate(frames) if f.startswith("process ")), default=-1)
        pid = frames[depth].split(":", 1)[0].removeprefix("process ") if depth >= 0 else ""
        kind = children.get(int(pid), "API process") if pid.isdigit() else "API process"
        processes[kind] += int(count)
        threads[f"{kind}: {_thread_label(frames[depth + 2:])}"] += int(count)
    total = sum(processes.values()) or 1
    print("  py-spy --gil during POST phases: " + ", ".join(f"{k} {v / total:.0%}" for k, v in processes.items()))
    for name, n in threads.most_common(8):
        print(f"    {n / total:5.1%}  {name}")


def _thread_label(frames: list[str]) -> str:
    """What a sampled stack was doing: the outermost frame of our code or of a library we name."""
    for frame in frames:
        for mark in ("moto/", "werkzeug/", "infra/local/runner", "chalicelib/", "sqlalchemy/", "botocore/",
                     "psycopg/", "chalice/local"):
            if mark in frame:
                return f"{mark.rstrip('/')} ({frame.split(' (')[0]})"
    return frames[-1].split(" (")[0] if frames else "?"


def main() -> int:
    with _harness.throwaway_database() as url:
        prefix = f"ymera-bench-load-{uuid.uuid4().hex[:6]}:"
        rt = Runtime(url, prefix)
        try:
            ready = rt.wait_ready()
            token, agent_id, task_id = seed(rt)
            users = [user(rt) for _ in range(CLIENTS)]
            results = run(rt, token, agent_id, task_id, users)
        except BaseException:
            print(rt.output(), file=sys.stderr)
            raise
        finally:
            stopped = rt.stop()
            import redis

            _harness.drop_redis_keys(redis.Redis.from_url(_harness.REDIS_URL), prefix)
    return report(results, ready, stopped)


def run(rt: Runtime, token: str, agent_id: str, task_id: str, users: list[tuple[str, str]]
        ) -> dict[str, tuple[int, float, list[float], int]]:
    post = {"agent_id": agent_id, "title": "load", "input_data": TASK}
    phases = {"GET /health": ("GET", "/health", None, None, 200),
              "GET /tasks/{id}": ("GET", f"/tasks/{task_id}", None, token, 200),
              "POST /tasks": ("POST", "/tasks", post, token, 202),
              MANY_USERS: ("POST", "/tasks", post, users, 202)}
    # Warm-up, not measured: connections, code paths, and each consumer's first task (a lane's consumer process
    # imports its agent, jsonschema and its clients then: a Lambda's cold start, not its throughput); then the
    # warm-up's tasks are let finish, so no phase measures the drain of another's.
    phase(rt, "GET", "/health", None, None, 200, WARM_SECONDS)
    phase(rt, "POST", "/tasks", post, token, 202, WARM_SECONDS)
    drained(rt, token)
    totals: dict[str, tuple[int, float, list[float], int]] = {name: (0, 0.0, [], 0) for name in phases}
    cpu: dict[str, Counter[str]] = {name: Counter() for name in phases}
    runtime = {rt.proc.pid, *_platform.descendants(rt.proc.pid)}
    database = rt.database
    spying = os.environ.get("BENCH_PYSPY", "")
    raws: list[Path] = []
    for r in range(ROUNDS):
        for name, args in phases.items():
            spy = None
            if name == "POST /tasks" and spying:
                raws.append(Path(spying if spying != "1" else rt.state) / f"pyspy-post-{r}.raw")
                spy = pyspy(rt.proc.pid, SECONDS, raws[-1])
            snapshot = cpu_snapshot()
            n, elapsed, lat, errors = phase(rt, *args)
            cpu[name] += cpu_delta(snapshot, cpu_snapshot(), runtime, database)
            before = totals[name]
            totals[name] = (before[0] + n, before[1] + elapsed, before[2] + lat, before[3] + errors)
            if spy is not None:
                spy.wait(60)
    if raws:
        gil_share([raw for raw in raws if raw.exists()], _children(rt.proc.pid))
    for name, spent in cpu.items():  # this run's processes' CPU during the phases, per request of the phase
        n = totals[name][0] or 1
        print(f"  CPU per request, {name:<30} {sum(spent.values()) / n * 1e3:6.2f} ms: " + ", ".join(
            f"{kind} {seconds / n * 1e3:.2f}" for kind, seconds in spent.most_common()))
    return totals


def _children(parent: int) -> dict[int, str]:
    """The API process's children by pid: "emulator" (moto) and "functions" (the runner and its handlers)."""
    try:
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    except OSError:
        return {}
    kinds = {b"infra.local.emulator": "emulator", b"infra.local.functions": "functions"}
    found: dict[int, str] = {}
    for child in children:
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        found.update({int(child): kind for mark, kind in kinds.items() if mark in cmdline})
    return found


def report(results: dict[str, tuple[int, float, list[float], int]], ready: float, stopped: float) -> int:
    print(f"make run (python -m infra.local) with this machine's Postgres and Redis; ready in {ready:.1f}s, "
          f"stopped by Ctrl-C in {stopped:.1f}s")
    print(f"{CLIENTS} concurrent clients, keep-alive, {ROUNDS} rounds x {SECONDS:g}s per endpoint, interleaved")
    rate = {}
    for name, (n, elapsed, lat, errors) in results.items():
        rate[name] = n / elapsed if elapsed else 0.0
        print(f"  {name:<30} {rate[name]:8.1f} req/s   p50 {statistics.median(lat) * 1e3 if lat else 0:7.2f} ms   "
              f"p99 {pct(lat, 99) * 1e3:7.2f} ms   {n} requests, {errors} errors")
    post, get, health = rate["POST /tasks"], rate["GET /tasks/{id}"], rate["GET /health"]
    p99 = {name: pct(r[2], 99) for name, r in results.items()}
    print(f"  GET /tasks/{{id}} / GET /health = {get / health:.2f}x the rate; POST /tasks / GET /health = "
          f"{post / health:.3f}x the rate, p99 {p99['POST /tasks'] / p99['GET /health']:.1f}x")
    ratio = post / get if get else 0.0
    errors = sum(r[3] for r in results.values())
    ok = ratio >= BUDGET_POST_VS_GET and errors == 0
    inverse = 1 / ratio if ratio else float("inf")
    many = rate[MANY_USERS] / get if get else 0.0
    print(f"  {MANY_USERS} / cached GET /tasks/{{id}} = {many:.3f}x the rate "
          f"(1/{1 / many if many else float('inf'):.1f}) "
          f"(info: the same POSTs from {CLIENTS} users, not one)")
    print(f"  POST /tasks / cached GET /tasks/{{id}} = {ratio:.3f}x the rate (1/{inverse:.1f}); "
          f"budget >= {BUDGET_POST_VS_GET} (1/4), no errors ({errors})  {'ok' if ok else 'OVER BUDGET'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
