"""Per-request cost of the HTTP middleware (log context, token-bucket check, request metrics).

Authenticated `GET /agents` through chalice.test.Client against a throwaway
Postgres database and the local Redis, with and without the middleware in the
same run and the same app: the middleware is removed from and put back into
`app.middleware_handlers` between interleaved rounds, so drift on a busy
machine hits both sides alike.

    .venv/bin/python bench/middleware_overhead.py   # BENCH_CALLS=200 per side by default
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _harness import REDIS_URL, throwaway_database  # noqa: E402 - bench/ is on the path when run as a script

CALLS = int(os.environ.get("BENCH_CALLS", "200"))
ROUNDS = 10


def main() -> int:
    with throwaway_database() as url:
        return run(url)


def run(database_url: str) -> int:
    import logging

    import redis

    prefix = f"ymera-bench-{uuid.uuid4().hex[:8]}:"
    os.environ.update({"DATABASE_URL": database_url, "REDIS_URL": REDIS_URL, "YMERA_STAGE": "test",
                       "YMERA_JWT_SECRET": "bench-secret-" + "b" * 40, "YMERA_BCRYPT_ROUNDS": "4",
                       "YMERA_REDIS_KEY_PREFIX": prefix,
                       # Every call must be served: a 429 would measure the refusal path instead.
                       "YMERA_RATE_LIMIT_USER_CAPACITY": "1000000"})
    from chalice.test import Client

    from app import app
    from chalicelib.api.middleware import http_middleware
    from chalicelib.config import Settings
    from chalicelib.container import Container, set_container
    from chalicelib.observability import logger

    # The access log goes to a null stream: we measure formatting it, not a terminal.
    for handler in logging.getLogger(logger.name).handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the process

    set_container(Container(Settings()))
    entry = (http_middleware, "http")
    headers = {"Content-Type": "application/json"}
    samples: dict[bool, list[float]] = {True: [], False: []}
    try:
        with Client(app) as client:
            user = f"bench{uuid.uuid4().hex[:6]}"
            client.http.post("/auth/register", headers=headers, body=json.dumps(
                {"username": user, "email": f"{user}@example.com", "password": "bench password"}))
            token = json.loads(client.http.post("/auth/login", headers=headers, body=json.dumps(
                {"username": user, "password": "bench password"})).body)["access_token"]
            auth = {**headers, "Authorization": f"Bearer {token}"}
            for _ in range(20):  # warm pools, caches and the Lua script on both paths
                client.http.get("/agents", headers=auth)
            per_round = max(1, CALLS // ROUNDS)
            for _ in range(ROUNDS):
                for with_middleware in (True, False):
                    if with_middleware and entry not in app.middleware_handlers:
                        app.middleware_handlers.append(entry)
                    if not with_middleware:
                        app.middleware_handlers.remove(entry)
                    for _ in range(per_round):
                        started = time.perf_counter()
                        response = client.http.get("/agents", headers=auth)
                        samples[with_middleware].append(time.perf_counter() - started)
                        assert response.status_code == 200, response.body
    finally:
        if entry not in app.middleware_handlers:
            app.middleware_handlers.append(entry)
        r = redis.Redis.from_url(REDIS_URL)
        for key in r.scan_iter(match=f"{prefix}*"):
            r.delete(key)

    with_mw, without = statistics.median(samples[True]), statistics.median(samples[False])
    print(f"authenticated GET /agents, chalice.test.Client, median of {len(samples[True])} calls per side")
    print(f"  with middleware     {with_mw * 1000:7.3f} ms")
    print(f"  without middleware  {without * 1000:7.3f} ms")
    print(f"  overhead            {(with_mw - without) * 1000:7.3f} ms ({with_mw / without:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
