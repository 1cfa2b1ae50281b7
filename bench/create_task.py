"""`POST /tasks` in-process through the Chalice app, with its fast-path publish (moto SQS).

Reports the median and p95 latency of the whole request, and of TaskService.create with each fast path
(interleaved call by call), and what each costs: this thread's CPU (median; with moto in-process, its SQS
work is in it unless BENCH_NULL_SQS=1), SQL statements, connection pool checkouts (each one pings the
server: `pool_pre_ping`) and commits. BENCH_CALLS (default 400); BENCH_NULL_SQS=1 replaces
moto's SQS with a publisher that does nothing, leaving only our own cost.
Runs against a throwaway Postgres database and the test Redis (own key prefix). No budget: a figure for
issue #14 (the fast path's second transaction).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import _harness  # noqa: E402 - needs the path above
from _harness import LambdaContext, call, event, summary, timings  # noqa: E402

CALLS = int(os.environ.get("BENCH_CALLS", "400"))


def main() -> int:
    from moto import mock_aws

    with _harness.throwaway_database() as url:
        prefix = _harness.configure(url, YMERA_BCRYPT_ROUNDS="4", YMERA_QUOTA_TASKS_PER_USER_PER_DAY=str(10**6))
        with mock_aws():
            return run(prefix)


def run(prefix: str) -> int:
    import boto3
    from sqlalchemy import event as sa_event

    from chalicelib.config import Settings
    from chalicelib.container import Container, set_container
    from infra.bootstrap import bootstrap

    counters = _harness.Counters()
    container = Container(Settings(), redis_client=counters.redis_client(_harness.REDIS_URL))
    set_container(container)
    counters.watch_engine(container.db.engine)
    pool = {"checkouts": 0, "commits": 0}
    sa_event.listen(container.db.engine, "checkout", lambda *_: pool.__setitem__("checkouts", pool["checkouts"] + 1))
    sa_event.listen(container.db.engine, "commit", lambda *_: pool.__setitem__("commits", pool["commits"] + 1))
    from app import app

    if os.environ.get("BENCH_NULL_SQS"):  # leave moto out: only our own cost (SQL, pool, app) remains
        container.relay.publisher = type("NullSqs", (), {"publish": lambda self, d, m: set()})()
    ctx = LambdaContext()
    try:
        with _harness.quiet_stdout():
            bootstrap(boto3.client("sqs", region_name="us-east-1"), _harness.QUEUE_PREFIX)
            call(app, event("POST", "/auth/register", body={"username": "bench", "email": "bench@example.com",
                                                            "password": "bench password"}), 201)
            token = call(app, event("POST", "/auth/login", body={"username": "bench",
                                                                 "password": "bench password"}))["access_token"]
            agent = call(app, event("POST", "/agents", body={"name": "b", "type": "validation"}, token=token), 201)
            create = event("POST", "/tasks", token=token, body={
                "agent_id": agent["id"], "title": "bench", "input_data": {"schema": {"type": "object"}, "payload": {}}})
            timings(lambda: call(app, create, 202), 50)  # warm
            costs = {"request": _costs(counters, pool, lambda: call(app, create, 202))}
            services = _services(container, agent["id"], token)
            for name, fn in services.items():
                costs[name] = _costs(counters, pool, fn)
            samples: dict[str, list[float]] = {"request": [], **{name: [] for name in services}}
            cpu: dict[str, list[float]] = {name: [] for name in samples}
            clock, cpu_clock = time.perf_counter, time.thread_time
            for _ in range(CALLS):  # round robin, call by call: machine load hits each variant alike
                started, cpu_started = clock(), cpu_clock()
                app(create, ctx)
                samples["request"].append(clock() - started)
                cpu["request"].append(cpu_clock() - cpu_started)
                for name, fn in services.items():
                    started, cpu_started = clock(), cpu_clock()
                    fn()
                    samples[name].append(clock() - started)
                    cpu[name].append(cpu_clock() - cpu_started)
    finally:
        container.db.engine.dispose()
        _harness.drop_redis_keys(container.redis, prefix)
    print(f"over {CALLS} calls each, interleaved:")
    for name, figures in samples.items():
        c = costs[name]
        print(f"  {name:<28} {summary(figures)}  CPU {statistics.median(cpu[name]) * 1e3:6.2f} ms  {c['sql']} SQL, "
              f"{c['checkouts']} checkouts, {c['commits']} commits")
    return 0


def _services(container: Any, agent_id: str, token: str) -> dict[str, Any]:
    """TaskService.create with each fast path: the relay transaction (before #14) and the held connection."""
    import uuid

    import jwt

    from chalicelib.schemas.tasks import TaskCreate
    from chalicelib.services.meta import RequestMeta
    from chalicelib.services.tasks import TaskService

    user_id = uuid.UUID(jwt.decode(token, options={"verify_signature": False})["sub"])
    req = TaskCreate(agent_id=uuid.UUID(agent_id), title="bench", input_data={"schema": {"type": "object"},
                                                                             "payload": {}})
    shared = {"agents": container.agents, "cache": container.cache, "quotas": container.quotas}
    relay_tx = TaskService(container.db, after_commit=container.relay.publish_one, **shared)
    held = TaskService(container.db, fast_publish=container.relay.publish_committed, **shared)
    return {"create, relay transaction": lambda: relay_tx.create(user_id, req, RequestMeta()),
            "create, held connection": lambda: held.create(user_id, req, RequestMeta())}


def _costs(counters: Any, pool: dict[str, int], fn: Any) -> dict[str, int]:
    before = dict(pool)
    counters.sql = counters.redis = 0
    counters.active = True
    fn()
    counters.active = False
    return {"sql": counters.sql, "redis": counters.redis,
            **{k: pool[k] - before[k] for k in pool}}


if __name__ == "__main__":
    sys.exit(main())
