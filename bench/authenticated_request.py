"""Per-request cost of authentication: median of an authenticated `GET /agents`.

Runs the Chalice app in-process (chalice.test.Client) against a throwaway
Postgres database and the local Redis, and prints the median and p95 of N
calls. Compare runs before/after a change to the per-request auth check.

    .venv/bin/python bench/authenticated_request.py   # BENCH_CALLS=200 by default
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

CALLS = int(os.environ.get("BENCH_CALLS", "200"))
PG_ADMIN_URL = os.environ.get("YMERA_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("YMERA_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


def main() -> int:
    from sqlalchemy import create_engine, text

    from chalicelib.db.migrate import upgrade

    name = f"ymera_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade(url)
        return run(url)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run(database_url: str) -> int:
    prefix = f"ymera-bench-{uuid.uuid4().hex[:8]}:"
    os.environ.update({"DATABASE_URL": database_url, "REDIS_URL": REDIS_URL, "YMERA_STAGE": "test",
                       "YMERA_JWT_SECRET": "bench-secret-" + "b" * 40, "YMERA_BCRYPT_ROUNDS": "4",
                       "YMERA_REDIS_KEY_PREFIX": prefix,
                       # The limiter stays in the path (its cost is real) but must not throttle the bench.
                       "YMERA_RATE_LIMIT_USER_CAPACITY": "1000000"})
    from chalice.test import Client

    from app import app
    from chalicelib.config import Settings
    from chalicelib.container import Container, set_container

    container = Container(Settings())
    set_container(container)
    headers = {"Content-Type": "application/json"}
    with Client(app) as client:
        creds = {"username": "bench", "email": "bench@example.com", "password": "bench password"}
        assert client.http.post("/auth/register", headers=headers, body=json.dumps(creds)).status_code == 201
        login = client.http.post("/auth/login", headers=headers,
                                 body=json.dumps({"username": "bench", "password": "bench password"}))
        auth = {**headers, "Authorization": f"Bearer {login.json_body['access_token']}"}
        # Same run, same process, alternating blocks of 20 calls: with the per-request session check, and with it
        # replaced by a pass-through (signature check only), so the difference is the check's own cost and
        # machine noise hits both alike.
        real, bypass = container.sessions, _PassThrough()
        results: dict[str, list[float]] = {"with session check": [], "signature only": []}
        _measure(client, auth, 20)  # warm pools, caches and code paths
        for _ in range(CALLS // 20):
            for label, guard in (("with session check", real), ("signature only", bypass)):
                container.__dict__["sessions"] = guard
                results[label] += _measure(client, auth, 20)
        container.__dict__["sessions"] = real
        # The check alone, outside HTTP: signature verification vs the session check (cache hit, one MGET).
        token = auth["Authorization"].split()[1]
        claims = container.tokens.verify(token, "access")
        for label, fn in (("tokens.verify", lambda: container.tokens.verify(token, "access")),
                          ("sessions.check", lambda: real.check(claims))):
            timings = []
            for _ in range(CALLS):
                start = time.perf_counter()
                fn()
                timings.append(time.perf_counter() - start)
            print(f"{label:>15} alone: median {statistics.median(timings) * 1e3:.3f} ms")
    container.db.engine.dispose()
    if container.redis is not None:
        for key in container.redis.scan_iter(match=f"{prefix}*"):
            container.redis.delete(key)
    for label, samples in results.items():
        samples.sort()
        print(f"authenticated GET /agents, {label:>18}, {len(samples)} calls: "
              f"median {statistics.median(samples) * 1e3:.3f} ms, p95 {samples[int(len(samples) * 0.95)] * 1e3:.3f} ms")
    return 0


class _PassThrough:
    def check(self, claims: object) -> object:
        return claims


def _measure(client: object, auth: dict[str, str], calls: int) -> list[float]:
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        response = client.http.get("/agents", headers=auth)  # type: ignore[attr-defined]
        samples.append(time.perf_counter() - start)
        assert response.status_code == 200, response.json_body
    return samples


if __name__ == "__main__":
    sys.exit(main())
