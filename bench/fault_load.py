"""Fault load: 1,000 tasks created through the in-process API while Postgres is cut (a loopback proxy, never
the server), then Redis, then a consumer crashes; the consumer drains the (moto, in-process) queue until
every task is terminal. Prints tasks submitted/completed/lost/duplicated, 5xx seen and recovery seconds;
exits 1 if anything was lost, run twice (two result rows) or answered with a 5xx other than 503.

Bounded and loopback only: a throwaway database on the test Postgres (YMERA_TEST_PG_ADMIN_URL), a key prefix
of its own on the test Redis, proxies on 127.0.0.1, and a drain that gives up after BENCH_FAULT_DRAIN_SECONDS.
Knobs: BENCH_FAULT_TASKS (1000), BENCH_FAULT_OUTAGE_SECONDS (3), BENCH_FAULT_DRAIN_SECONDS (180).
The scenario itself is tests/fault_scenario.py (the test suite runs it with 200 tasks).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _harness import REDIS_URL, configure, drop_redis_keys, quiet_stdout, throwaway_database  # noqa: E402

TASKS = int(os.environ.get("BENCH_FAULT_TASKS", "1000"))
OUTAGE = float(os.environ.get("BENCH_FAULT_OUTAGE_SECONDS", "3"))
DRAIN = float(os.environ.get("BENCH_FAULT_DRAIN_SECONDS", "180"))


class JsonApi:
    """The test suite's Api helper, without importing the test package's fixtures."""

    def __init__(self, client: Any) -> None:
        self.client, self.token = client, None

    def call(self, method: str, path: str, body: Any = None, *, token: str | None = None) -> Any:
        headers = {"Content-Type": "application/json"}
        if (token if token is not None else self.token):
            headers["Authorization"] = f"Bearer {token if token is not None else self.token}"
        return getattr(self.client.http, method.lower())(path, headers=headers,
                                                         body=json.dumps(body) if body is not None else None)

    def signup(self) -> None:
        user = {"username": "faultload", "email": "faultload@example.com", "password": "correct horse battery"}
        assert self.call("POST", "/auth/register", user).status_code == 201
        login = {"username": user["username"], "password": user["password"]}
        self.token = self.call("POST", "/auth/login", login).json_body["access_token"]

    def agent(self) -> dict[str, Any]:
        r = self.call("POST", "/agents", {"name": "load", "type": "validation"})
        assert r.status_code == 201, r.json_body
        return dict(r.json_body)


def main() -> int:
    import logging

    import boto3
    import redis
    from chalice.test import Client
    from moto import mock_aws
    from sqlalchemy.engine import make_url

    from chalicelib.config import Settings
    from chalicelib.container import Container, set_container
    from chalicelib.db.session import Database, make_engine
    from infra.bootstrap import bootstrap
    from tests.fault_proxy import FaultProxy
    from tests.fault_scenario import run_scenario

    # The local runner logs each failed invocation with its traceback: expected here, by the hundred.
    logging.getLogger("infra.local.runner").setLevel(logging.CRITICAL)
    with throwaway_database() as url:
        parsed, rparsed = make_url(url), make_url(REDIS_URL)
        pg = FaultProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
        rp = FaultProxy(rparsed.host or "127.0.0.1", rparsed.port or 6379)
        redis_proxied = REDIS_URL.replace(f"{rparsed.host}:{rparsed.port}", f"127.0.0.1:{rp.port}", 1)
        prefix = configure(pg.url_for(url), REDIS_URL=redis_proxied, YMERA_REDIS_BREAKER_SECONDS="0.5",
                           YMERA_CONSUMER_RECORD_RESERVE_SECONDS="0.1", YMERA_BCRYPT_ROUNDS="4",
                           YMERA_QUOTA_TASKS_PER_USER_PER_DAY=str(10 * TASKS))
        direct = Database(make_engine(url))
        proxied = Database(make_engine(pg.url_for(url), pool_timeout=2.0))
        try:
            with mock_aws():
                sqs = boto3.client("sqs", region_name="us-east-1")
                queue_prefix = os.environ["YMERA_QUEUE_PREFIX"]
                bootstrap(sqs, queue_prefix, visibility_timeout=1)
                container = Container(Settings(), database=proxied)
                set_container(container)
                from app import app

                started = time.monotonic()
                with Client(app) as client, quiet_stdout():
                    figures = run_scenario(JsonApi(client), container, sqs, pg, rp, direct, tasks=TASKS,
                                           outage_seconds=OUTAGE, prefix=queue_prefix, drain_deadline_seconds=DRAIN)
                elapsed = time.monotonic() - started
                set_container(None)
        finally:
            pg.close()
            rp.close()
            proxied.engine.dispose()
            direct.engine.dispose()
            drop_redis_keys(redis.Redis.from_url(REDIS_URL), prefix)
    print(f"fault load ({TASKS} tasks, {OUTAGE:.0f} s Postgres cut, {OUTAGE:.0f} s Redis cut, 1 consumer crash, "
          f"{elapsed:.1f} s in all)")
    print(figures.line())
    bad = figures.lost or figures.duplicated or figures.http_5xx or figures.submitted != TASKS
    print("budget: 0 lost, 0 run twice, no 5xx but 503: " + ("OVER BUDGET" if bad else "ok"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
