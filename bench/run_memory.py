"""Resident memory of `make run` after 10,000 tasks against after 1,000 (issue 14): no growth per task.

`python -m infra.local` (subprocess, this machine's Postgres in a throwaway database and Redis under its own key
prefix) takes validation tasks through the API (`POST /tasks`, BENCH_CLIENTS concurrent clients, default 8;
BENCH_CHUNK tasks at a time, default 200, each chunk completed before the next) until BENCH_FIRST (default 1,000)
have completed; then VmRSS of the platform's process and of every process under it
(/proc/<pid>/status); then BENCH_TOTAL (default 10,000) in all, completed, and VmRSS again. Before each reading
the platform idles BENCH_SETTLE seconds (default 3) so the reading is not of requests in flight.
Budget (issue 14): RSS after BENCH_TOTAL <= 1.10x RSS after BENCH_FIRST; exit 1 over budget.

BENCH_MOTO=external runs the AWS emulator (moto) as a process of its own, outside the platform's tree, and prints
its RSS apart: the emulator stands in for AWS and is not the platform (default: embedded, as `make run` has it).
Run: /work/main/.venv/bin/python bench/run_memory.py
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import _harness  # noqa: E402 - needs the path above
import _platform  # noqa: E402

FIRST = int(os.environ.get("BENCH_FIRST", "1000"))
TOTAL = int(os.environ.get("BENCH_TOTAL", "10000"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "8"))
#: created, then waited for until completed, before the next chunk: 8 clients creating without pause starved the
#: one consumer thread of the GIL (a backlog of thousands, the run taking half an hour).
CHUNK = int(os.environ.get("BENCH_CHUNK", "200"))
SETTLE = float(os.environ.get("BENCH_SETTLE", "3"))
MOTO = os.environ.get("BENCH_MOTO", "embedded")
BUDGET = 1.10
INPUT = {"schema": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
         "payload": {"id": "A-1"}}


class Load:
    """Concurrent API clients creating validation tasks (one user each: quotas and rate limits are lifted)."""

    def __init__(self, base: str, clients: int) -> None:
        self.base = base
        self.sessions = [_platform.signup(base) for _ in range(clients)]
        self.agents = [s.post(f"{base}/agents", json={"name": "m", "type": "validation"}, timeout=10).json()["id"]
                       for s in self.sessions]
        self.created = 0
        self.errors = 0
        self._lock = threading.Lock()

    def create(self, n: int) -> None:
        def client(i: int, count: int) -> None:
            s, agent = self.sessions[i], self.agents[i]
            for _ in range(count):
                r = s.post(f"{self.base}/tasks", json={"agent_id": agent, "title": "m", "input_data": INPUT},
                           timeout=30)
                with self._lock:
                    if r.status_code == 202:
                        self.created += 1
                    else:
                        self.errors += 1

        share = [n // len(self.sessions) + (1 if i < n % len(self.sessions) else 0) for i in range(len(self.sessions))]
        with ThreadPoolExecutor(len(self.sessions)) as pool:
            list(pool.map(client, range(len(self.sessions)), share))


def completed(db: Any) -> int:
    from sqlalchemy import text

    with db.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM tasks WHERE status = 'completed'")).scalar_one())


def run_tasks(load: Load, db: Any, until: int) -> None:
    """Create and complete tasks, CHUNK at a time, until `until` have completed."""
    while (done := completed(db)) < until:
        load.create(min(CHUNK, until - done))
        wait_completed(db, min(until, load.created))


def wait_completed(db: Any, n: int, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while (done := completed(db)) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done} of {n} tasks completed after {timeout:.0f} s")
        time.sleep(0.5)


def reading(pid: int, skip: set[int]) -> tuple[int, dict[int, int]]:
    time.sleep(SETTLE)
    per = {p: kb for p, kb in _platform.rss_kb(pid).items() if p not in skip}
    return sum(per.values()), per


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    import redis

    from chalicelib.db.session import Database, make_engine

    moto: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = {}
    if MOTO == "external":
        port = free_port()
        moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "MOTO_PORT": str(port)}
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("moto did not start") from None
                time.sleep(0.2)
    started = time.monotonic()
    try:
        with _harness.throwaway_database() as url:
            prefix = f"ymera-bench-{uuid.uuid4().hex[:8]}:"
            rt = _platform.Runtime(url, prefix, **env)
            db = Database(make_engine(url))
            try:
                rt.wait_ready()
                pid = rt.proc.pid
                load = Load(rt.base, CLIENTS)
                run_tasks(load, db, FIRST)
                first_at = time.monotonic()
                rss_first, per_first = reading(pid, set())
                run_tasks(load, db, TOTAL)
                rate = (TOTAL - FIRST) / (time.monotonic() - first_at)
                rss_total, per_total = reading(pid, set())
                moto_rss = _platform.rss_kb(moto.pid).get(moto.pid) if moto is not None else None
            finally:
                rt.stop()
                db.engine.dispose()
                _harness.drop_redis_keys(redis.Redis.from_url(_harness.REDIS_URL), prefix)
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait(10)
    ratio = rss_total / rss_first
    ok = ratio <= BUDGET and load.errors == 0
    where = ("moto embedded in the platform's process (as `make run` has it)" if MOTO != "external" else
             "moto outside the platform (BENCH_MOTO=external): the figures are the platform's alone")
    print(f"make run resident memory, {CLIENTS} API clients, {where}; {time.monotonic() - started:.0f} s in all")
    print(f"  tasks created {load.created} ({load.errors} errors), {rate:.0f} tasks/s after the first {FIRST}")
    for label, total, per in ((f"after {FIRST:>6,} tasks", rss_first, per_first),
                              (f"after {TOTAL:>6,} tasks", rss_total, per_total)):
        parts = ", ".join(f"{_platform.command(p)[:40]} {kb / 1024:.0f} MB" for p, kb in per.items()) \
            if len(per) > 1 else "one process"
        print(f"  {label}: VmRSS {total / 1024:7.1f} MB   ({parts})")
    if moto_rss is not None:
        print(f"  the emulator (moto, not the platform) after {TOTAL:,}: {moto_rss / 1024:.1f} MB")
    print(f"  growth {(rss_total - rss_first) / 1024:+.1f} MB = {(rss_total - rss_first) * 1024 / (TOTAL - FIRST):+.0f}"
          " bytes per task")
    print(f"budget RSS after {TOTAL:,} <= {BUDGET:.2f}x after {FIRST:,}: {'ok' if ok else 'OVER BUDGET'} "
          f"({ratio:.3f}x{'' if load.errors == 0 else f', {load.errors} failed requests'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
