"""Commit-to-WebSocket-delivery latency and notifier throughput on `make run` (python -m infra.local) with this
machine's Postgres (a throwaway database) and Redis (own key prefix). Budget (issue 11): p99 <= 1 s.

1. Latency, real tasks: one user, one WebSocket client; BENCH_TASKS tasks (default 100) created over HTTP
   BENCH_RATE per second (default 10). For every event: receive time - its `occurred_at` (the trigger's
   statement_timestamp(), a few ms before the commit, so this slightly over-states commit-to-delivery);
   per task: POST sent -> its `completed` event received (create-to-completed). Ratio of the two.
2. Latency, commit-timed: this process appends events with the ledger API and takes the time the COMMIT
   returned; receive - that time (BENCH_COMMITS, default 200, spaced 20 ms).
3. Throughput: BENCH_CLIENTS users (default 200), one connection each; BENCH_EVENTS_PER_USER events each
   (default 25) committed in one transaction; events/s from that commit to the last message received.

Run: /work/main/.venv/bin/python bench/notify_latency.py
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import _harness  # noqa: E402 - needs the path above
import _platform  # noqa: E402

TASKS = int(os.environ.get("BENCH_TASKS", "100"))
RATE = float(os.environ.get("BENCH_RATE", "10"))
COMMITS = int(os.environ.get("BENCH_COMMITS", "200"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "200"))
PER_USER = int(os.environ.get("BENCH_EVENTS_PER_USER", "25"))
BUDGET_P99 = 1.0
PASSWORD = "correct horse battery"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class Runtime(_platform.Runtime):
    """`make run` (bench/_platform.py) on a free port, 10 WebSocket connections per user allowed."""

    def __init__(self, database_url: str, prefix: str) -> None:
        super().__init__(database_url, prefix, port=0, YMERA_WEBSOCKET_MAX_CONNECTIONS_PER_USER="10",
                         YMERA_QUOTA_TASKS_PER_USER_PER_DAY=str(10**6))

    def websocket_url(self) -> str:
        s, _, _ = signup(self.base)
        return str(s.get(f"{self.base}/status", timeout=5).json()["websocket_url"])


def signup(base: str) -> tuple[Any, str, str]:
    import jwt
    import requests

    s, name = requests.Session(), f"b{uuid.uuid4().hex[:10]}"
    s.post(f"{base}/auth/register", json={"username": name, "email": f"{name}@example.com", "password": PASSWORD},
           timeout=10).raise_for_status()
    token = s.post(f"{base}/auth/login", json={"username": name, "password": PASSWORD}, timeout=10).json()[
        "access_token"]
    s.headers["Authorization"] = f"Bearer {token}"
    return s, token, str(jwt.decode(token, options={"verify_signature": False})["sub"])


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# --- 1. real tasks ------------------------------------------------------------------------------------------------

async def real_tasks(rt: Runtime, ws_url: str) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    s, token, _ = signup(rt.base)
    agent = s.post(f"{rt.base}/agents", json={"name": "v", "type": "validation"}, timeout=5).json()
    posted: dict[str, float] = {}
    completed: dict[str, float] = {}
    delivery: list[float] = []
    loop = asyncio.get_running_loop()

    def create() -> None:
        t0 = time.time()
        r = s.post(f"{rt.base}/tasks", json={"agent_id": agent["id"], "title": "bench",
                                             "input_data": {"schema": {"type": "object"}, "payload": {}}}, timeout=10)
        posted[r.json()["id"]] = t0

    async with connect(f"{ws_url}/?token={token}", max_queue=None) as ws:
        async def receive() -> None:
            while len(completed) < TASKS:
                msg = json.loads(await ws.recv())
                now = time.time()
                delivery.append(now - ts(msg["occurred_at"]))
                if msg["status"] == "completed":
                    completed[msg["resource"]["id"]] = now

        receiver = asyncio.create_task(receive())
        for _ in range(TASKS):
            await loop.run_in_executor(None, create)
            await asyncio.sleep(1 / RATE)
        await asyncio.wait_for(receiver, 60)
    e2e = [completed[t] - posted[t] for t in completed if t in posted]
    return {"delivery": delivery, "create_to_completed": e2e}


# --- 2. commit-timed ----------------------------------------------------------------------------------------------

async def commit_timed(rt: Runtime, ws_url: str, db: Any) -> list[float]:
    from websockets.asyncio.client import connect

    from chalicelib.events import ledger

    _, token, user = signup(rt.base)
    owner = uuid.UUID(user)
    committed: dict[int, float] = {}
    latencies: list[float] = []
    loop = asyncio.get_running_loop()

    def commit() -> None:
        with db.transaction() as session:
            event = ledger.append(session, owner, ledger.TASK_STATUS_CHANGED, "task", uuid.uuid4(), "processing", {})
        committed[event.event_id] = time.time()

    async with connect(f"{ws_url}/?token={token}", max_queue=None) as ws:
        async def receive() -> None:
            while len(latencies) < COMMITS:
                msg = json.loads(await ws.recv())
                now = time.time()
                while msg["event_id"] not in committed:  # the message can beat the commit's return
                    await asyncio.sleep(0.001)
                latencies.append(now - committed[msg["event_id"]])

        receiver = asyncio.create_task(receive())
        for _ in range(COMMITS):
            await loop.run_in_executor(None, commit)
            await asyncio.sleep(0.02)
        await asyncio.wait_for(receiver, 60)
    return [max(0.0, v) for v in latencies]


# --- 3. throughput ------------------------------------------------------------------------------------------------

async def throughput(rt: Runtime, ws_url: str, db: Any) -> dict[str, float]:
    from concurrent.futures import ThreadPoolExecutor

    from websockets.asyncio.client import connect

    from chalicelib.events import ledger

    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(16) as pool:
        users = await asyncio.gather(*(loop.run_in_executor(pool, signup, rt.base) for _ in range(CLIENTS)))
    conns = [await connect(f"{ws_url}/?token={token}", max_queue=None) for _, token, _ in users]
    total = CLIENTS * PER_USER
    got = 0
    last_at = 0.0
    done = asyncio.Event()

    async def receive(ws: Any) -> None:
        nonlocal got, last_at
        for _ in range(PER_USER):
            await ws.recv()
            got += 1
            last_at = time.time()
            if got == total:
                done.set()

    receivers = [asyncio.create_task(receive(ws)) for ws in conns]

    def commit_all() -> float:
        """Every event in ONE transaction (bulk rows, counters bumped as the triggers do): nothing can be
        delivered before its commit, so the clock then measures the notifier draining a backlog alone."""
        from sqlalchemy import insert, text

        from chalicelib.db.event_models import Event as EventRow

        with db.transaction() as session:
            rows = []
            for _, _, user in users:
                last = session.execute(text(
                    "INSERT INTO event_counters AS ec (user_id, last_event_id, delivered_event_id, updated_at) "
                    "VALUES (:u, :n, 0, now()) ON CONFLICT (user_id) DO UPDATE "
                    "SET last_event_id = ec.last_event_id + :n RETURNING last_event_id"),
                    {"u": user, "n": PER_USER}).scalar_one()
                rows += [{"user_id": uuid.UUID(user), "event_id": last - PER_USER + i + 1,
                          "type": "task.status_changed", "resource_type": "task", "resource_id": uuid.uuid4(),
                          "status": "processing", "occurred_at": datetime.now().astimezone(), "payload": {}}
                         for i in range(PER_USER)]
            session.execute(insert(EventRow), rows)
            session.execute(text("SELECT pg_notify(:c, :p)"), {"c": ledger.NOTIFY_CHANNEL, "p": "bench"})
        return time.time()

    first = await loop.run_in_executor(None, commit_all)
    try:
        await asyncio.wait_for(done.wait(), 120)
    finally:
        for r in receivers:
            r.cancel()
        for ws in conns:
            await ws.close()
    return {"events": float(total), "seconds": last_at - first, "events_per_second": total / (last_at - first)}


def report(name: str, values: list[float]) -> tuple[float, float]:
    p50, p99 = statistics.median(values), pct(values, 99)
    print(f"  {name:<44} n={len(values):<5} p50 {p50 * 1000:8.1f} ms   p99 {p99 * 1000:8.1f} ms   "
          f"max {max(values) * 1000:8.1f} ms")
    return p50, p99


def main() -> int:
    import redis

    from chalicelib.db.session import Database, make_engine

    with _harness.throwaway_database() as url:
        prefix = f"ymera-bench-{uuid.uuid4().hex[:8]}:"
        rt = Runtime(url, prefix)
        db = Database(make_engine(url))
        try:
            rt.wait_ready()
            ws_url = rt.websocket_url()
            print(f"notify latency on make run (real Postgres, Redis); {os.cpu_count()} cores")
            real = asyncio.run(real_tasks(rt, ws_url))
            timed = asyncio.run(commit_timed(rt, ws_url, db))
            tp = asyncio.run(throughput(rt, ws_url, db))
        finally:
            rt.stop()
            db.engine.dispose()
            _harness.drop_redis_keys(redis.Redis.from_url(_harness.REDIS_URL), prefix)
    print(f"1. {TASKS} real tasks at {RATE:g}/s, one client")
    d50, d99 = report("event occurred_at -> WebSocket message", real["delivery"])
    c50, c99 = report("task POST -> its `completed` message", real["create_to_completed"])
    print(f"   ratio delivery/create-to-completed: p50 {d50 / c50:.2f}   p99 {d99 / c99:.2f}")
    print(f"2. {COMMITS} commits timed by the committer, one client")
    t50, t99 = report("COMMIT returned -> WebSocket message", timed)
    print(f"3. {CLIENTS} clients (one per user), {PER_USER} events each")
    print(f"   a backlog of {tp['events']:.0f} events (one commit) delivered in {tp['seconds']:.2f} s after the commit:"
          f" {tp['events_per_second']:.0f} events/s")
    worst = max(d99, t99)
    print(f"budget p99 <= {BUDGET_P99:.1f} s: {'OK' if worst <= BUDGET_P99 else 'OVER'} ({worst * 1000:.0f} ms)")
    return 0 if worst <= BUDGET_P99 else 1


if __name__ == "__main__":
    sys.exit(main())
