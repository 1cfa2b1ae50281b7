"""YMERA's agent consumer against Celery doing the equivalent work, same Postgres, same run (issue 14).

Both process N validation tasks (BENCH_TASKS, default 2,000) per round, rounds interleaved (the side that goes
first alternates), median of BENCH_ROUNDS (default 5):
  - ymera:  functions.agent_consumer.handler driven in-process with Lambda-shaped batches of 10 records.
  - celery: Celery 5 (prefork, 2 processes, Redis broker on its own db number and key prefix) running
            bench/_celery_app.py: conditional claim, the validation agent's function (a validator built and the
            schema meta-validated per task, as a plain worker does), INSERT result, UPDATE completed.
Throughput: YMERA's wall time over its loop; Celery's from its first claim to its last completion (Postgres
timestamps), its messages published before it is told to consume. CPU: the consumer's process (YMERA) or the
worker's main and pool processes (Celery), user + system; Postgres backends' CPU is printed too (info).
Budget (issue 14): YMERA >= 2x Celery's tasks/s and <= 0.5x its CPU per task; exit 1 over budget.
A third side, `ymera x2` (information, no budget): two forked consumer processes share the batches, as Lambda's
SQS event source runs at least two instances, against Celery's prefork 2 at the same concurrency.

`--profile`: YMERA only: a cProfile (CPU time) profile of BENCH_PROFILE_TASKS (400) tasks (self time by function and
by package), SQL round trips per task by kind, and the event-ledger triggers' share of the per-task time.

Celery lives only in .venv-bench (bench/requirements.txt): the script creates it and re-runs itself there.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

import _harness  # noqa: E402 - needs the path above

N = int(os.environ.get("BENCH_TASKS", "2000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
PROFILE_TASKS = int(os.environ.get("BENCH_PROFILE_TASKS", "400"))
BATCH = 10
BUDGET_THROUGHPUT, BUDGET_CPU = 2.0, 0.5
CELERY_BROKER = os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/12")
INPUT = {"schema": {"type": "object", "required": ["id", "qty"],
                    "properties": {"id": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}}},
         "payload": {"id": "A-1", "qty": 0}}
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


class Bench:
    def __init__(self, url: str) -> None:
        from chalicelib.container import get_container
        from chalicelib.db.models import Agent, User

        self.db = get_container().db
        with self.db.transaction() as s:
            user = User(username="bench", email="bench@example.com", password_hash="x")
            s.add(user)
            s.flush()
            agent = Agent(user_id=user.id, name="v", type="validation")
            s.add(agent)
            s.flush()
            self.agent_id = agent.id
        # Polling and pg_stat_activity, outside what is measured; autocommit, or the activity view is one snapshot.
        self.monitor = self.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        self.url = url

    def seed(self, n: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
        """n queued validation tasks of a fresh user (each side and round counts its own tasks)."""
        from sqlalchemy import insert

        from chalicelib.db.models import Task, User

        user_id, ids = uuid.uuid4(), [uuid.uuid4() for _ in range(n)]
        with self.db.transaction() as s:
            s.execute(insert(User).values(id=user_id, username=f"u{user_id.hex[:12]}",
                                          email=f"{user_id.hex[:12]}@example.com", password_hash="x"))
            s.execute(insert(Task), [{"id": i, "user_id": user_id, "agent_id": self.agent_id, "title": "t",
                                      "agent_type": "validation", "status": "queued", "input_data": INPUT}
                                     for i in ids])
        return user_id, ids

    def completed(self, user_id: uuid.UUID) -> int:
        from sqlalchemy import text

        return int(self.monitor.execute(text("SELECT count(*) FROM tasks WHERE user_id = :u AND status = 'completed'"),
                                        {"u": user_id}).scalar_one())

    def backends(self) -> list[int]:
        from sqlalchemy import text

        return [int(p) for p in self.monitor.execute(text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        ).scalars()]


def ymera_round(bench: Bench, n: int) -> tuple[float, float, float]:
    from batch_processing import Ctx, event

    from functions.agent_consumer import handler

    user_id, ids = bench.seed(n)
    events = [event(ids[i:i + BATCH]) for i in range(0, n, BATCH)]
    pg = bench.backends()
    pg0, cpu0, t0 = cpu_seconds(pg), time.process_time(), time.perf_counter()
    for ev in events:
        handler(ev, Ctx())
    wall, cpu, pg_cpu = time.perf_counter() - t0, time.process_time() - cpu0, cpu_seconds(pg) - pg0
    assert bench.completed(user_id) == n, "not every YMERA task completed"
    return n / wall, cpu * 1000 / n, pg_cpu * 1000 / n


class CeleryWorker:
    def __init__(self, url: str) -> None:
        self.prefix = f"ymera-bench-celery-{uuid.uuid4().hex[:8]}:"
        self.name = f"bench-{uuid.uuid4().hex[:6]}@localhost"
        os.environ.update({"BENCH_CELERY_PREFIX": self.prefix, "BENCH_DATABASE_URL": url,
                           "BENCH_CELERY_BROKER": CELERY_BROKER})
        from _celery_app import app, run_task

        self.app, self.task = app, run_task
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "_celery_app", "worker", "--pool=prefork", "--concurrency=2",
             "-Q", f"idle-{self.prefix}", "-n", self.name, "--without-gossip", "--without-mingle",
             "--without-heartbeat", "--loglevel=INFO"],
            cwd=HERE, env={**os.environ, "PYTHONPATH": f"{HERE}:{ROOT}"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not app.control.ping(destination=[self.name], timeout=0.5):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the Celery worker did not start")
        self.pids = [self.proc.pid, *children(self.proc.pid)]

    def round(self, bench: Bench, n: int) -> tuple[float, float, float]:
        from sqlalchemy import text

        user_id, ids = bench.seed(n)
        queue = f"round-{uuid.uuid4().hex[:8]}"
        with self.app.producer_or_acquire() as producer:  # published before the worker is told to consume
            for task_id in ids:
                self.task.apply_async((str(task_id),), queue=queue, producer=producer)
        pg = bench.backends()
        pg0, cpu0 = cpu_seconds(pg), cpu_seconds(self.pids)
        self.app.control.add_consumer(queue, destination=[self.name], reply=True)
        deadline = time.monotonic() + 600
        while bench.completed(user_id) < n:
            if time.monotonic() > deadline:
                raise RuntimeError("the Celery worker did not finish the round")
            time.sleep(0.05)
        cpu, pg_cpu = cpu_seconds(self.pids) - cpu0, cpu_seconds(pg) - pg0
        self.app.control.cancel_consumer(queue, destination=[self.name], reply=True)
        window = bench.monitor.execute(text(
            "SELECT extract(epoch FROM max(completed_at) - min(started_at)) FROM tasks WHERE user_id = :u"),
            {"u": user_id}).scalar_one()
        return n / float(window), cpu * 1000 / n, pg_cpu * 1000 / n

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        import redis

        _harness.drop_redis_keys(redis.Redis.from_url(CELERY_BROKER), self.prefix)


def ymera_pair_round(bench: Bench, n: int) -> tuple[float, float, float]:
    """Information, not the budget: two consumer processes (forked) share the batches, as Lambda's SQS event
    source runs at least two instances of a function, against Celery's prefork 2 at the same concurrency."""
    from batch_processing import Ctx, event

    from functions.agent_consumer import handler

    user_id, ids = bench.seed(n)
    events = [event(ids[i:i + BATCH]) for i in range(0, n, BATCH)]
    t0 = time.perf_counter()
    kids = []
    for half in (events[0::2], events[1::2]):
        pid = os.fork()
        if pid == 0:  # the child: its own connections (the parent's stay the parent's), its half of the batches
            code = 1
            try:
                bench.db.engine.dispose(close=False)
                for ev in half:
                    handler(ev, Ctx())
                code = 0
            finally:
                os._exit(code)
        kids.append(pid)
    cpu = 0.0
    for pid in kids:
        _, status, usage = os.wait4(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "a YMERA consumer process failed"
        cpu += usage.ru_utime + usage.ru_stime
    wall = time.perf_counter() - t0
    assert bench.completed(user_id) == n, "not every YMERA task completed"
    # The children's Postgres backends ended with them, uncounted: no Postgres figure for this side.
    return n / wall, cpu * 1000 / n, float("nan")


def compare(bench: Bench) -> int:
    worker = CeleryWorker(bench.url)
    try:
        with _harness.quiet_stdout():  # the consumer's EMF line and log lines are written, not shown
            ymera_round(bench, 200)  # warm: imports, pools, jsonschema, the worker's processes
            worker.round(bench, 200)
            ymera_pair_round(bench, 200)
            rows: dict[str, list[tuple[float, float, float]]] = {"ymera": [], "celery": [], "ymera x2": []}
            run = {"ymera": ymera_round, "celery": worker.round, "ymera x2": ymera_pair_round}
            sides = list(run)
            for r in range(ROUNDS):
                for side in sides[r % len(sides):] + sides[:r % len(sides)]:
                    rows[side].append(run[side](bench, N))
    finally:
        worker.stop()
    med = {side: [statistics.median(col) for col in zip(*values, strict=True)] for side, values in rows.items()}
    print(f"{N} validation tasks per side and round, median of {ROUNDS} interleaved rounds")
    for side, (tps, cpu, pg) in med.items():
        print(f"  {side:<8} {tps:8.1f} tasks/s   {cpu:6.2f} CPU ms/task   (Postgres backends {pg:5.2f} CPU ms/task)")
    ratio_tps, ratio_cpu = med["ymera"][0] / med["celery"][0], med["ymera"][1] / med["celery"][1]
    ok_tps, ok_cpu = ratio_tps >= BUDGET_THROUGHPUT, ratio_cpu <= BUDGET_CPU
    print(f"  ymera / celery throughput  = {ratio_tps:5.2f}x  (budget >= {BUDGET_THROUGHPUT}x)  "
          f"{'ok' if ok_tps else 'OVER BUDGET'}")
    print(f"  ymera / celery CPU per task = {ratio_cpu:5.2f}x  (budget <= {BUDGET_CPU}x)  "
          f"{'ok' if ok_cpu else 'OVER BUDGET'}")
    print(f"  ymera x2 / celery throughput = {med['ymera x2'][0] / med['celery'][0]:5.2f}x  (info: two consumer "
          f"processes, the concurrency of Lambda's event source floor, against prefork 2)")
    return 0 if ok_tps and ok_cpu else 1


def profile(bench: Bench) -> int:
    import cProfile
    import pstats

    from event_ledger import triggers
    from sqlalchemy import event as sa_event

    kinds: Counter[str] = Counter()
    sa_event.listen(bench.db.engine, "before_cursor_execute",
                    lambda conn, cur, stmt, *a: kinds.update([" ".join(stmt.split()[:3])[:40]]))
    sa_event.listen(bench.db.engine, "commit", lambda conn: kinds.update(["COMMIT"]))
    sa_event.listen(bench.db.engine.pool, "checkout", lambda *a: kinds.update(["(pool checkout)"]))
    dialect, ping = bench.db.engine.dialect, bench.db.engine.dialect.do_ping

    def counted_ping(dbapi_conn: Any) -> bool:  # IdlePing's SELECT 1, only after a connection sat idle
        kinds.update(["SELECT 1 (idle ping)"])
        return bool(ping(dbapi_conn))

    dialect.do_ping = counted_ping  # type: ignore[method-assign]
    from psycopg._connection_base import BaseConnection

    original = BaseConnection._exec_command

    def command(conn: Any, cmd: Any, *args: Any, **kwargs: Any) -> Any:  # BEGIN / COMMIT sent by the driver
        text = cmd if isinstance(cmd, bytes) else str(cmd).encode()
        kinds.update([f"(wire {text.split()[0].decode().upper()})"])
        return original(conn, cmd, *args, **kwargs)

    BaseConnection._exec_command = command  # type: ignore[method-assign]
    with _harness.quiet_stdout():
        ymera_round(bench, 100)
        kinds.clear()
        profiler = cProfile.Profile(time.process_time)  # CPU time, not wall: waiting on Postgres is not ours
        profiler.enable()
        _, cpu_ms, _ = ymera_round(bench, PROFILE_TASKS)
        profiler.disable()
        seeding = {"INSERT INTO users", "INSERT INTO tasks", "SELECT count(*) FROM", "SELECT pid FROM"}
        per_task = {k: v / PROFILE_TASKS for k, v in kinds.items() if k not in seeding}
        walls: dict[bool, list[float]] = {True: [], False: []}
        for r in range(2 * ROUNDS):
            on = r % 2 == 0
            triggers(bench.db, on)
            walls[on].append(1000 / ymera_round(bench, 200)[0])
        triggers(bench.db, True)
    print(f"YMERA consumer, {PROFILE_TASKS} validation tasks in batches of {BATCH} ({cpu_ms:.2f} CPU ms/task "
          "under cProfile)")
    statements = sum(v for k, v in per_task.items() if k != "COMMIT" and not k.startswith("("))
    wire = sum(v for k, v in per_task.items() if k.startswith("(wire"))
    print(f"  round trips per task: {statements:.2f} statements (pings included) + {wire:.2f} BEGIN/COMMIT "
          f"commands sent = {statements + wire:.2f}; SQLAlchemy commits {per_task.get('COMMIT', 0):.2f}")
    for kind, count in sorted(per_task.items(), key=lambda kv: -kv[1]):
        print(f"    {count:5.2f}  {kind}")
    stats: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    by_fn: Counter[str] = Counter()
    by_pkg: Counter[str] = Counter()
    for (path, line, fn), (_, _, self_time, _, _) in stats.items():
        by_fn[f"{fn} ({_short(path)}:{line})"] += self_time
        by_pkg[_package(path)] += self_time
    total = sum(by_pkg.values()) or 1.0
    print("  self CPU by package: " + ", ".join(f"{p} {t / total:.0%}" for p, t in by_pkg.most_common(10)))
    print("  top self CPU:")
    for fn, t in by_fn.most_common(20):
        print(f"    {t / total:5.1%}  {fn}")
    print("  cumulative CPU per task by stage (cProfile):")
    for label, (file_part, names) in STAGES.items():
        cum = max((v[3] for (path, _, fn), v in stats.items() if file_part in path and fn in names), default=0.0)
        print(f"    {cum * 1000 / PROFILE_TASKS:6.3f} ms  {label}")
    on, off = statistics.median(walls[True]), statistics.median(walls[False])
    print(f"  event-ledger triggers: {on:.3f} ms/task with, {off:.3f} without (median of {ROUNDS} interleaved rounds "
          f"of 200): {on - off:.3f} ms = {(on - off) / on:.0%} of the per-task time")
    return 0


#: stage label -> (file, function names): the largest cumulative time among them is the stage's.
STAGES = {
    "the whole handler": ("functions/agent_consumer.py", {"handler"}),
    "batch claim (claim_batch)": ("services/processing.py", {"claim_batch"}),
    "input model (Input.model_validate, check_schema_input)": ("agents/schema_limits.py", {"check_schema_input"}),
    "validator build + check_schema": ("agents/validation.py", {"_build_validator", "_validator_for"}),
    "iter_errors + error list": ("agents/validation.py", {"_collect_errors"}),
    "store outcome transaction (_store)": ("services/processing.py", {"_store"}),
    "log lines (powertools Logger.info)": ("aws_lambda_powertools/logging/logger.py", {"info"}),
    "EMF metrics (publish_task_outcomes)": ("chalicelib/observability.py", {"publish_task_outcomes"}),
    "powertools BatchProcessor (process_partial_response)": ("batch/decorators.py", {"process_partial_response"}),
}


def _short(path: str) -> str:
    for marker in ("site-packages/", str(ROOT) + "/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path.rsplit("/", 1)[-1]


def _package(path: str) -> str:
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if str(ROOT) in path:
        return path.split(str(ROOT) + "/", 1)[1].split("/", 1)[0]
    return "builtins" if path == "~" else "stdlib/other"


def main() -> int:
    _harness.ensure_bench_env(__file__, "celery")
    from moto import mock_aws

    with _harness.throwaway_database() as url:
        _harness.configure(url, POWERTOOLS_LOG_LEVEL="INFO")  # the consumer's production log level
        with mock_aws():  # nothing here should reach AWS; if something does, it reaches moto
            bench = Bench(url)
            try:
                return profile(bench) if "--profile" in sys.argv else compare(bench)
            finally:
                bench.monitor.close()
                bench.db.engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
