"""Create-to-completed on `make run` against a Celery round trip doing the same work, same Postgres, same run
(issue 14).

- ymera:  `python -m infra.local` (subprocess, this machine's Postgres in a throwaway database and Redis under its
          own key prefix). The client: `POST /tasks` (a validation task), then `GET /tasks/{id}?wait=20` until the
          task is terminal (the long poll answers when it completes: no polling interval in the figure).
- celery: Celery 5 (prefork, 2 processes; Redis broker and result backend) running bench/_celery_app.py's
          `bench.validate_result`: conditional claim, the validation agent's function, INSERT result, UPDATE
          completed, on a task row inserted beforehand (not timed). The client: `apply_async((id,)).get()`.

One task at a time (latency, not throughput), BENCH_TASKS (default 30) per side and round, BENCH_ROUNDS (default 5)
rounds interleaved (the side that goes first alternates); p50 over every sample of a side. YMERA's breakdown
comes from the server's timestamps (tasks.created_at, outbox.published_at, tasks.started_at, tasks.completed_at)
and the client's clock (same machine): POST sent -> created_at -> published -> claimed (started_at) -> completed
-> the long poll's answer received; plus the POST's own duration.
Budget (issue 14): YMERA's create-to-completed p50 <= 2x Celery's round-trip p50; exit 1 over budget.

Celery lives only in .venv-bench (bench/requirements.txt): the script creates it and re-runs itself there.
Run: /work/main/.venv/bin/python bench/e2e_vs_celery.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

import _harness  # noqa: E402 - needs the path above

TASKS = int(os.environ.get("BENCH_TASKS", "30"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
BUDGET = 2.0
CELERY_REDIS = os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/12")
INPUT = {"schema": {"type": "object", "required": ["id", "qty"],
                    "properties": {"id": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}}},
         "payload": {"id": "A-1", "qty": 0}}
#: the YMERA breakdown: (label, from, to) over the per-task instants below.
STAGES = [
    ("POST sent -> tasks.created_at", "sent", "created"),
    ("created_at -> outbox.published_at (fast path)", "created", "published"),
    ("published_at -> tasks.started_at (claimed)", "published", "claimed"),
    ("started_at -> tasks.completed_at (the work)", "claimed", "completed"),
    ("completed_at -> long poll answer received", "completed", "answered"),
    ("POST /tasks round trip (client)", "sent", "posted"),
    ("POST answered -> long poll answer received", "posted", "answered"),
]


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


class Ymera:
    def __init__(self, url: str, **env: str) -> None:
        from _platform import Runtime

        self.prefix = f"ymera-bench-{uuid.uuid4().hex[:8]}:"
        self.rt = Runtime(url, self.prefix, **env)
        self.samples: list[dict[str, float]] = []

    def start(self) -> None:
        from _platform import signup

        self.rt.wait_ready()
        self.session = signup(self.rt.base)
        self.agent = self.session.post(f"{self.rt.base}/agents", json={"name": "v", "type": "validation"},
                                       timeout=10).json()["id"]

    def one(self) -> dict[str, float]:
        base, s = self.rt.base, self.session
        sent = time.time()
        r = s.post(f"{base}/tasks", json={"agent_id": self.agent, "title": "e2e", "input_data": INPUT}, timeout=10)
        posted = time.time()
        assert r.status_code == 202, (r.status_code, r.text[:300])
        task_id = r.json()["id"]
        status = r.json().get("status")
        while status not in {"completed", "failed", "cancelled", "timed_out"}:
            g = s.get(f"{base}/tasks/{task_id}", params={"wait": 20}, timeout=30)
            assert g.status_code == 200, (g.status_code, g.text[:300])
            status = g.json()["status"]
        answered = time.time()
        assert status == "completed", status
        return {"id": task_id, "sent": sent, "posted": posted, "answered": answered}  # type: ignore[dict-item]

    def round(self, n: int) -> list[float]:
        got = [self.one() for _ in range(n)]
        self.samples += got
        return [g["answered"] - g["sent"] for g in got]

    def server_times(self, db: Any) -> None:
        """Fill in every sample's server instants (epoch seconds) from Postgres."""
        from sqlalchemy import text

        ids = [uuid.UUID(str(g["id"])) for g in self.samples]
        with db.engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT t.id, extract(epoch FROM t.created_at), extract(epoch FROM o.published_at), "
                "extract(epoch FROM t.started_at), extract(epoch FROM t.completed_at) "
                "FROM tasks t LEFT JOIN outbox o ON o.aggregate_id = t.id WHERE t.id = ANY(:ids)"), {"ids": ids}).all()
        by_id = {str(r[0]): r[1:] for r in rows}
        for g in self.samples:
            created, published, claimed, completed = (float(v) if v is not None else float("nan")
                                                      for v in by_id[str(g["id"])])
            g.update(created=created, published=published, claimed=claimed, completed=completed)


class CeleryClient:
    def __init__(self, url: str) -> None:
        self.prefix = f"ymera-bench-celery-{uuid.uuid4().hex[:8]}:"
        self.name = f"bench-{uuid.uuid4().hex[:6]}@localhost"
        self.queue = f"e2e-{uuid.uuid4().hex[:8]}"
        os.environ.update({"BENCH_CELERY_PREFIX": self.prefix, "BENCH_DATABASE_URL": url,
                           "BENCH_CELERY_BROKER": CELERY_REDIS, "BENCH_CELERY_BACKEND": CELERY_REDIS,
                           "BENCH_CELERY_PREFETCH": "1"})
        from _celery_app import app, run_task_with_result

        self.app, self.task = app, run_task_with_result
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "_celery_app", "worker", "--pool=prefork", "--concurrency=2",
             "-Q", self.queue, "-n", self.name, "--without-gossip", "--without-mingle", "--without-heartbeat",
             "--loglevel=WARNING"],
            cwd=HERE, env={**os.environ, "PYTHONPATH": f"{HERE}:{ROOT}"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self, db: Any, agent_owner: tuple[uuid.UUID, uuid.UUID]) -> None:
        deadline = time.monotonic() + 60
        while not self.app.control.ping(destination=[self.name], timeout=0.5):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the Celery worker did not start")
        self.db, (self.user_id, self.agent_id) = db, agent_owner
        self.samples: list[dict[str, Any]] = []

    def round(self, n: int) -> list[float]:
        from sqlalchemy import insert

        from chalicelib.db.models import Task

        ids = [uuid.uuid4() for _ in range(n)]
        with self.db.transaction() as s:  # the rows exist before the clock starts (YMERA's POST creates them)
            s.execute(insert(Task), [{"id": i, "user_id": self.user_id, "agent_id": self.agent_id, "title": "e2e",
                                      "agent_type": "validation", "status": "queued", "input_data": INPUT}
                                     for i in ids])
        out = []
        for task_id in ids:
            sent = time.time()
            assert self.task.apply_async((str(task_id),), queue=self.queue).get(timeout=30) == "completed"
            answered = time.time()
            self.samples.append({"id": task_id, "sent": sent, "answered": answered})
            out.append(answered - sent)
        return out

    def server_times(self) -> None:
        from sqlalchemy import text

        with self.db.engine.connect() as conn:
            rows = dict(conn.execute(text(
                "SELECT id, extract(epoch FROM started_at) FROM tasks WHERE id = ANY(:ids)"),
                {"ids": [g["id"] for g in self.samples]}).all())
        for g in self.samples:
            g["claimed"] = float(rows[g["id"]])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        import redis

        _harness.drop_redis_keys(redis.Redis.from_url(CELERY_REDIS), self.prefix)
        _harness.drop_redis_keys(redis.Redis.from_url(CELERY_REDIS), "celery-task-meta-")


def seed_owner(db: Any) -> tuple[uuid.UUID, uuid.UUID]:
    from chalicelib.db.models import Agent, User

    with db.transaction() as s:
        user = User(username=f"celery{uuid.uuid4().hex[:8]}", email=f"c{uuid.uuid4().hex[:8]}@example.com",
                    password_hash="x")
        s.add(user)
        s.flush()
        agent = Agent(user_id=user.id, name="v", type="validation")
        s.add(agent)
        s.flush()
        return user.id, agent.id


def ms(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return f"p50 {statistics.median(ordered) * 1000:7.1f} ms   p90 {p90 * 1000:7.1f} ms"


def main() -> int:
    _harness.ensure_bench_env(__file__, "celery")
    import redis

    from chalicelib.db.session import Database, make_engine

    with _harness.throwaway_database() as url:
        db = Database(make_engine(url))
        ymera, celery = Ymera(url), CeleryClient(url)
        try:
            ymera.start()
            celery.start(db, seed_owner(db))
            ymera.round(5)  # warm: imports, pools, jsonschema, both sides' connections
            celery.round(5)
            ymera.samples.clear()
            celery.samples.clear()
            e2e: dict[str, list[float]] = {"ymera": [], "celery": []}
            for r in range(ROUNDS):
                for side in (("ymera", "celery") if r % 2 == 0 else ("celery", "ymera")):
                    e2e[side] += (ymera if side == "ymera" else celery).round(TASKS)
            ymera.server_times(db)
            celery.server_times()
        finally:
            celery.stop()
            ymera.rt.stop()
            _harness.drop_redis_keys(redis.Redis.from_url(_harness.REDIS_URL), ymera.prefix)
            db.engine.dispose()
    print(f"create -> completed, one task at a time, {TASKS} per side and round, {ROUNDS} interleaved rounds "
          f"(p50 over {len(e2e['ymera'])} tasks a side); {os.cpu_count()} cores")
    print(f"  ymera  POST /tasks + GET ?wait= until completed  {ms(e2e['ymera'])}")
    print(f"  celery apply_async(...).get()                     {ms(e2e['celery'])}")
    print("  ymera breakdown (server timestamps, client clock; same machine):")
    for label, a, b in STAGES:
        print(f"    {label:<48} {ms([g[b] - g[a] for g in ymera.samples])}")
    print("  celery breakdown:")
    print(f"    {'apply_async sent -> tasks.started_at (claimed)':<48} "
          f"{ms([g['claimed'] - g['sent'] for g in celery.samples])}")
    print(f"    {'started_at -> .get() returned':<48} {ms([g['answered'] - g['claimed'] for g in celery.samples])}")
    ratio = statistics.median(e2e["ymera"]) / statistics.median(e2e["celery"])
    ok = ratio <= BUDGET
    print(f"budget ymera p50 <= {BUDGET:g}x celery p50: {'OK' if ok else 'OVER BUDGET'} ({ratio:.2f}x)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
