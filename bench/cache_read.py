"""Read cost of the two-level cache for an agent record, against the local Postgres and Redis.

Prints the median and p95 (µs) of N reads of `AgentService.record`:
  l1_hit   L1 entry valid: one MGET of the two version tokens, no decode
  l2_hit   L1 empty (a one-entry L1 alternating two keys): one MGET of tokens + value, JSON decode
  miss     version bumped (untimed) before each read: MGET, Postgres SELECT, validate, SET
  postgres no cache at all: the SELECT + validate alone (the floor a miss adds to)
  redis_get  one bare Redis GET (the round-trip floor of any validated read)

    .venv/bin/python bench/cache_read.py   # BENCH_CALLS=2000 by default
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _harness import REDIS_URL, throwaway_database  # noqa: E402 - bench/ is on the path when run as a script

CALLS = int(os.environ.get("BENCH_CALLS", "2000"))


def timed(fn: Callable[[], object], before: Callable[[], object] | None = None) -> dict[str, float]:
    samples = []
    for _ in range(CALLS):
        if before is not None:
            before()
        start = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    return {"median_us": round(statistics.median(samples), 1), "p95_us": round(samples[int(len(samples) * 0.95)], 1)}


def run(url: str) -> dict[str, dict[str, float]]:
    import redis

    from chalicelib.cache.namespaces import Namespace
    from chalicelib.cache.twolevel import TwoLevelCache
    from chalicelib.db.models import Agent, User
    from chalicelib.db.session import Database, make_engine
    from chalicelib.services.agents import AgentService

    db = Database(make_engine(url))
    client = redis.Redis.from_url(REDIS_URL)
    prefix = f"ymera-bench-{uuid.uuid4().hex[:8]}:"
    ttls = {Namespace.AGENTS.value: 3600}
    with db.transaction() as session:
        user = User(username="bench", email="bench@example.com", password_hash="x")
        session.add(user)
        session.flush()
        agents = [Agent(user_id=user.id, name=f"agent-{i}", type="validation", capabilities=["json-schema"],
                        meta={"team": "bench", "i": i}, config={}, status="active") for i in range(2)]
        session.add_all(agents)
        session.flush()
        ids = [a.id for a in agents]
    try:
        warm = AgentService(db, TwoLevelCache(client, prefix=prefix, ttls=ttls))
        warm.record(ids[0])
        one_slot = AgentService(db, TwoLevelCache(client, prefix=prefix, ttls=ttls, l1_max_entries=1))
        one_slot.record(ids[0])
        one_slot.record(ids[1])
        turn = iter(range(10**9))
        bumped = TwoLevelCache(client, prefix=prefix, ttls=ttls)
        missing = AgentService(db, bumped)
        results = {
            "l1_hit": timed(lambda: warm.record(ids[0])),
            "l2_hit": timed(lambda: one_slot.record(ids[next(turn) % 2])),
            "miss": timed(lambda: missing.record(ids[0]), before=lambda: bumped.invalidate("agents", str(ids[0]))),
            "postgres": timed(lambda: AgentService(db).record(ids[0])),
            "redis_get": timed(lambda: client.get(f"{prefix}nothing")),
        }
        assert warm.cache is not None and warm.cache.stats.l1_hits >= CALLS
        assert one_slot.cache is not None and one_slot.cache.stats.l2_hits >= CALLS
        assert bumped.stats.misses >= CALLS
        return results
    finally:
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
        db.engine.dispose()


def main() -> int:
    with throwaway_database() as url:
        print(json.dumps({"calls": CALLS, **run(url)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
