"""`GET /tasks` first page and a mid-list page for users with 100, 10,000 and 100,000 tasks (issue 14:
each <= 1.5x the 100-task figure), in-process through the Chalice app, interleaved call by call.

The mid-list page is the page whose cursor is the user's median task: with the row-value cursor
(`services/pagination.after_cursor`) it is an index range scan of one page; with the old OR form Postgres read
every row newer than the cursor. Also prints the rows the mid-list page's plan reads (EXPLAIN ANALYZE).
Throwaway Postgres database, the test Redis (own key prefix), moto for SQS. BENCH_LIST_CALLS per case.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import _harness  # noqa: E402 - needs the path above
from _harness import LambdaContext, call, event  # noqa: E402

BUDGET = 1.5
SIZES = (100, 10_000, int(os.environ.get("BENCH_LIST_LARGE", "100000")))
CALLS = int(os.environ.get("BENCH_LIST_CALLS", "200"))
LIMIT = 50


def main() -> int:
    from moto import mock_aws

    with _harness.throwaway_database() as url:
        prefix = _harness.configure(url, YMERA_BCRYPT_ROUNDS="4")
        with mock_aws():
            return run(prefix)


def seed(app, size: int) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """A user with `size` tasks (inserted directly, one agent); (token, cursor of the median task)."""
    from sqlalchemy import insert

    from chalicelib.container import get_container
    from chalicelib.db.models import Task
    from chalicelib.db.types import utcnow
    from chalicelib.services.pagination import encode_cursor

    name = f"list{size}"
    user_id = uuid.UUID(call(app, event("POST", "/auth/register", body={
        "username": name, "email": f"{name}@example.com", "password": "bench password"}), 201)["id"])
    token = call(app, event("POST", "/auth/login", body={"username": name, "password": "bench password"}))[
        "access_token"]
    agent = call(app, event("POST", "/agents", body={"name": name, "type": "validation"}, token=token), 201)
    now = utcnow()
    rows = [{"id": uuid.uuid4(), "user_id": user_id, "agent_id": uuid.UUID(agent["id"]), "agent_type": "validation",
             "title": f"t{i}", "status": "completed", "priority": "normal", "input_data": {}, "attempts": 1,
             "created_at": now - timedelta(seconds=i), "updated_at": now} for i in range(size)]
    db = get_container().db
    with db.transaction() as s:
        for i in range(0, size, 1000):  # multi-row statements: one ledger trigger call each (engine_analytics.seed)
            s.execute(insert(Task).values(rows[i:i + 1000]))
    median = rows[size // 2]
    return token, encode_cursor(median["created_at"], median["id"])


def run(prefix: str) -> int:
    from sqlalchemy import text

    from chalicelib.config import Settings
    from chalicelib.container import Container, set_container

    container = Container(Settings())
    set_container(container)
    from app import app

    ctx = LambdaContext()
    try:
        with _harness.quiet_stdout():
            users = {size: seed(app, size) for size in SIZES}
        with container.db.engine.begin() as conn:
            conn.execute(text("ANALYZE tasks"))
        cases = {}
        for size, (token, cursor) in users.items():
            cases[(size, "first")] = event("GET", "/tasks", token=token)
            cases[(size, "first")]["queryStringParameters"] = {"limit": str(LIMIT)}
            mid = event("GET", "/tasks", token=token)
            mid["queryStringParameters"] = {"limit": str(LIMIT), "cursor": cursor}
            cases[(size, "mid")] = mid
        with _harness.quiet_stdout():
            for key, ev in cases.items():  # warm, and check every answer is a full page
                for _ in range(20):
                    assert len(call(app, ev)["items"]) == LIMIT, key
            samples: dict[tuple[int, str], list[float]] = {k: [] for k in cases}
            for _ in range(CALLS):
                for key, ev in cases.items():
                    started = time.perf_counter()
                    app(ev, ctx)
                    samples[key].append(time.perf_counter() - started)
        rows_read = _rows_read(container, users[SIZES[-1]][1])
    finally:
        container.db.engine.dispose()
        _harness.drop_redis_keys(container.redis, prefix)
    med = {k: statistics.median(v) * 1e3 for k, v in samples.items()}
    over = []
    print(f"GET /tasks?limit={LIMIT}, in-process, {CALLS} calls per case, interleaved")
    for page in ("first", "mid"):
        base = med[(SIZES[0], page)]
        for size in SIZES:
            ratio = med[(size, page)] / base
            flag = "" if ratio <= BUDGET else "   OVER BUDGET"
            if ratio > BUDGET:
                over.append((size, page))
            print(f"  {page:<5} page, {size:>7,} tasks: median {med[(size, page)]:7.2f} ms  "
                  f"{ratio:5.2f}x the {SIZES[0]}-task figure (budget {BUDGET}x){flag}")
    print(f"  mid-list page of the {SIZES[-1]:,}-task user reads {rows_read} task rows (EXPLAIN ANALYZE)")
    return 1 if over else 0


def _rows_read(container, cursor: str) -> int:  # type: ignore[no-untyped-def]
    """Rows the list query's index scan returns for the mid-list page (the plan's top scan node)."""
    import json

    from sqlalchemy import select, text

    from chalicelib.db.models import Task
    from chalicelib.services.pagination import after_cursor

    with container.db.engine.connect() as conn:
        user = conn.execute(text("SELECT user_id FROM tasks GROUP BY user_id ORDER BY count(*) DESC LIMIT 1")).scalar()
        stmt = (select(Task.id).where(Task.user_id == user, after_cursor(Task.created_at, Task.id, cursor))
                .order_by(Task.created_at.desc(), Task.id.desc()).limit(LIMIT + 1))
        compiled = stmt.compile(conn, compile_kwargs={"literal_binds": True})
        plan = conn.execute(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {compiled}")).scalar()
    node = (plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]
    while node.get("Plans") and "Scan" not in node["Node Type"]:
        node = node["Plans"][0]
    return int(node["Actual Rows"]) + int(node.get("Rows Removed by Filter", 0))


if __name__ == "__main__":
    sys.exit(main())
