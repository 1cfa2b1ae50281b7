"""Consumer throughput: one 10-record batch vs ten 1-record batches, same run.

One commit claims the whole batch; the fast plain results of one owner are then written by one statement per
grouping window (`YMERA_CONSUMER_GROUP_WINDOW_SECONDS`, docs/consumers.md), so a 10-record batch of one owner
commits twice, and at worst (every result on its own) N + 1 times; a 1-record batch costs 2.

Seeds validation tasks in a throwaway Postgres database (the test server on
127.0.0.1:5432 unless YMERA_TEST_PG_ADMIN_URL says otherwise), then drives
functions.agent_consumer.handler with Lambda-shaped events, counting
transactions with a SQLAlchemy event listener.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _harness import throwaway_database  # noqa: E402 - bench/ is on the path when run as a script

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "15"))


class Ctx:
    function_name = "bench-agent-validation"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"
    aws_request_id = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def event(task_ids: list[uuid.UUID]) -> dict:
    arn = "arn:aws:sqs:us-east-1:123456789012:ymera-bench-agent-validation"
    return {"Records": [{"messageId": uuid.uuid4().hex, "receiptHandle": "rh",
                         "body": json.dumps({"task_id": str(t), "agent_type": "validation"}),
                         "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
                         "md5OfBody": "", "eventSource": "aws:sqs", "eventSourceARN": arn, "awsRegion": "us-east-1"}
                        for t in task_ids]}


def consumer_setup(url: str) -> tuple[Any, Callable[[int], list[uuid.UUID]]]:
    """The environment a consumer bench runs in (database `url`, no Redis), a user with one validation agent,
    and `seed(n)`: n queued validation tasks of theirs (ids), each failing its schema once."""
    os.environ.update({"DATABASE_URL": url, "YMERA_JWT_SECRET": "b" * 48, "YMERA_STAGE": "test",
                       "POWERTOOLS_LOG_LEVEL": "WARNING",
                       "YMERA_QUEUE_PREFIX": "ymera-bench", "AWS_DEFAULT_REGION": "us-east-1"})
    os.environ.pop("REDIS_URL", None)
    from chalicelib.container import get_container
    from chalicelib.db.models import Agent, Task, User

    db = get_container().db
    with db.transaction() as s:
        user = User(username="bench", email="bench@example.com", password_hash="x")
        s.add(user)
        s.flush()
        agent = Agent(user_id=user.id, name="v", type="validation")
        s.add(agent)
        s.flush()
        user_id, agent_id = user.id, agent.id

    def seed(n: int) -> list[uuid.UUID]:
        with db.transaction() as s:
            tasks = [Task(user_id=user_id, agent_id=agent_id, agent_type="validation", title="t",
                          status="queued", input_data={"schema": {"type": "object", "required": ["a"]},
                                                       "payload": {"b": 1}}) for _ in range(n)]
            s.add_all(tasks)
            s.flush()
            return [t.id for t in tasks]

    return db, seed


def main() -> int:
    # The consumer prints one EMF metrics document per invocation; keep the report readable.
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        report, ok = measure()
    print(report)
    # Not a timing budget: the batch must cost at most one claim commit plus one per result (11), or batching
    # regressed (with grouped results it is 2 here; more when a slow run splits the window).
    verdict = 'ok' if ok else 'OVER BUDGET'
    print(f"budget: one 10-record batch <= 11 commits, fewer than ten 1-record batches: {verdict}")
    return 0 if ok else 1


def measure() -> tuple[str, bool]:
    from sqlalchemy import event as sa_event

    with throwaway_database() as url:
        db, seed = consumer_setup(url)
        from functions.agent_consumer import handler

        commits: list[int] = []
        sa_event.listen(db.engine, "commit", lambda conn: commits.append(1))
        handler(event(seed(10)), Ctx())  # warm: imports, connection pool, jsonschema
        batched, single = [], []
        tx_batched = tx_single = 0
        for _ in range(ROUNDS):
            ids = seed(10)
            commits.clear()
            t = time.perf_counter()
            assert handler(event(ids), Ctx()) == {"batchItemFailures": []}
            batched.append(time.perf_counter() - t)
            tx_batched = len(commits)
            ids = seed(10)
            commits.clear()
            t = time.perf_counter()
            for task_id in ids:
                assert handler(event([task_id]), Ctx()) == {"batchItemFailures": []}
            single.append(time.perf_counter() - t)
            tx_single = len(commits)
        b, s_ = statistics.median(batched), statistics.median(single)
        db.engine.dispose()
        return (f"10 tasks, median of {ROUNDS}: one 10-record batch {b * 1000:.1f} ms ({tx_batched} commits), "
                f"ten 1-record batches {s_ * 1000:.1f} ms ({tx_single} commits) -> batching is {s_ / b:.2f}x faster",
                tx_batched <= 10 + 1 and tx_batched < tx_single)


if __name__ == "__main__":
    sys.exit(main())
