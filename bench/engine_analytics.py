"""Analytics over 100,000 tasks against 1,000 (budget: within 1.5x), on a throwaway Postgres database.

Two users' tasks are spread evenly over the same last 7 days, ending an hour ago (one with 1,000, one with
100,000, over 3 agent types, mixed statuses, failure codes and durations). The analytics engine answers
the default query (the last 7 days, per day) for each, interleaved over rounds:

1. reading the tasks directly (before any compaction; what the engine did before rollups);
2. after the rollup compactor ran (chalicelib/engines/rollups.py): rollups for the closed hours, tasks for
   the rest of the range.

Prints p50 per user and mode, the 100k/1k ratios, and the compaction's own cost; exits 1 over budget.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _harness import throwaway_database  # noqa: E402 - bench/ is on the path when run as a script

BUDGET = 1.5
SMALL, LARGE = 1_000, int(os.environ.get("BENCH_ANALYTICS_TASKS", "100000"))
ROUNDS = int(os.environ.get("BENCH_ANALYTICS_ROUNDS", "15"))
TYPES = ("validation", "security", "metrics")


def seed(db, user_id: uuid.UUID, n: int, end, rng: random.Random) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import insert

    from chalicelib.db.models import Agent, Task

    with db.transaction() as s:
        agents = []
        for t in TYPES:
            agent = Agent(user_id=user_id, name=f"{t}-{uuid.uuid4().hex[:6]}", type=t, mode="managed",
                          status="active", config={})
            s.add(agent)
            s.flush()
            agents.append((agent.id, t))
    span = timedelta(days=6, hours=20).total_seconds()  # inside the default range (the last 7 days)
    rows = []
    for i in range(n):
        agent_id, agent_type = agents[i % 3]
        created = end - timedelta(seconds=span * (i + 0.5) / n)
        status = rng.choice(("completed", "completed", "completed", "failed", "timed_out", "cancelled"))
        started = created + timedelta(seconds=rng.uniform(0.01, 3))
        done = started + timedelta(seconds=rng.uniform(0.05, 90))
        rows.append({"id": uuid.uuid4(), "user_id": user_id, "agent_id": agent_id, "agent_type": agent_type,
                     "title": "t", "status": status, "priority": "normal", "input_data": {}, "attempts": 1,
                     "error": None if status == "completed" else {"code": rng.choice(("E1", "E2", "E3")),
                                                                   "message": "m"},
                     "created_at": created, "updated_at": done, "started_at": started, "completed_at": done})
    with db.transaction() as s:
        # Multi-row INSERTs, 1,000 rows a statement: an executemany is one statement per row on psycopg, and each
        # fires the ledger's statement trigger, which bumps the user's counter row: 100,000 versions of one row in
        # one transaction made each bump slower than the last (the seed ran past 15 minutes).
        for i in range(0, n, 1000):
            s.execute(insert(Task).values(rows[i:i + 1000]))


def main() -> int:
    from sqlalchemy import text

    from chalicelib.config import Settings
    from chalicelib.db.models import User
    from chalicelib.db.session import Database, make_engine
    from chalicelib.db.types import utcnow
    from chalicelib.engines import EngineContext, registry, rollups

    rng = random.Random(11)
    with throwaway_database() as url:
        db = Database(make_engine(url))
        settings = Settings(database_url=url, stage="test")
        users = {}
        with db.transaction() as s:
            for name in ("small", "large"):
                user = User(username=f"bench-{name}", email=f"{name}@example.com", password_hash="x")
                s.add(user)
                s.flush()
                users[name] = user.id
        end = utcnow() - timedelta(hours=1)
        seed(db, users["small"], SMALL, end, rng)
        seed(db, users["large"], LARGE, end, rng)
        with db.engine.begin() as conn:
            conn.execute(text("ANALYZE"))
        engine = registry.get("analytics")

        def measure(label: str) -> dict[str, float]:
            samples: dict[str, list[float]] = {"small": [], "large": []}
            for _ in range(3):  # warm the plans and the buffer cache
                for name in samples:
                    engine.run(EngineContext(user_id=users[name], transaction=db.transaction, settings=settings), {})
            for _ in range(ROUNDS):
                for name in samples:
                    ctx = EngineContext(user_id=users[name], transaction=db.transaction, settings=settings)
                    started = time.perf_counter()
                    out = engine.run(ctx, {})
                    samples[name].append(time.perf_counter() - started)
                    assert out["tasks"]["total"] == (SMALL if name == "small" else LARGE), out["tasks"]["total"]
            p50 = {name: statistics.median(v) * 1e3 for name, v in samples.items()}
            print(f"{label:<28} 1k p50 {p50['small']:8.1f} ms   {LARGE // 1000}k p50 {p50['large']:8.1f} ms   "
                  f"ratio {p50['large'] / p50['small']:5.2f}x", flush=True)
            return p50

        direct = measure("tasks read directly")
        started = time.perf_counter()
        report = rollups.compact(db, now=utcnow(), grace=timedelta(seconds=600), max_hours=24 * 31, max_users=100)
        compaction = time.perf_counter() - started
        with db.engine.begin() as conn:
            conn.execute(text("ANALYZE"))
        print(f"compaction: {report.as_dict()} in {compaction * 1e3:.0f} ms "
              f"({compaction / (SMALL + LARGE) * 1e6:.1f} us per task, once per task)", flush=True)
        rolled = measure("rollups + recent tasks")
        ratio = rolled["large"] / rolled["small"]
        print(f"100k/1k with rollups: {ratio:.2f}x (budget {BUDGET}x); against direct reads the 100k query is "
              f"{direct['large'] / rolled['large']:.1f}x faster")
        db.engine.dispose()
        if ratio > BUDGET:
            print("OVER BUDGET")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
