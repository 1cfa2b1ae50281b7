"""Fixtures for the fault-injection suite (tests/integration/test_faults_*.py): a container whose Postgres and
Redis connections go through loopback proxies the test can cut (tests/fault_proxy.py). Nothing here stops or
touches the shared servers; only the proxies' connections are cut.

The outage length is `YMERA_FAULT_OUTAGE_SECONDS` (10 s by default; CI may shorten it).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import text

from chalicelib.config import Settings
from chalicelib.container import Container, set_container
from chalicelib.db.models import Base
from chalicelib.db.session import Database, make_engine
from tests.fault_proxy import FaultProxy
from tests.integration.conftest import PREFIX

OUTAGE_SECONDS = float(os.environ.get("YMERA_FAULT_OUTAGE_SECONDS", "10"))


@dataclass
class Faulty:
    container: Container
    pg: FaultProxy
    redis: FaultProxy
    db: Database  # through the proxy (what the container uses)
    direct: Database  # straight to Postgres (what the test checks with)


def _host_port(url: str, default: int) -> tuple[str, int]:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return parsed.host or "127.0.0.1", parsed.port or default


@pytest.fixture
def faulty(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, pg_url: str, redis_url: str,
           database: Database, aws: Any) -> Iterator[Faulty]:
    """Rate limiting is off (a test hammering the API would only measure the limiter) unless the test is
    marked `@pytest.mark.rate_limited`."""
    from tests.conftest import REDIS_PREFIX, TEST_SECRET

    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with database.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} CASCADE"))
    pg = FaultProxy(*_host_port(pg_url, 5432))
    host, port = _host_port(redis_url, 6379)
    rp = FaultProxy(host, port)
    redis_proxied = redis_url.replace(f"{host}:{port}", f"127.0.0.1:{rp.port}", 1)
    for key, value in {"DATABASE_URL": pg.url_for(pg_url), "REDIS_URL": redis_proxied, "YMERA_STAGE": "test",
                       "YMERA_REDIS_KEY_PREFIX": f"{REDIS_PREFIX}{uuid.uuid4().hex[:6]}:",
                       "YMERA_JWT_SECRET": TEST_SECRET, "YMERA_BCRYPT_ROUNDS": "4",
                       "YMERA_QUEUE_PREFIX": PREFIX, "YMERA_REDIS_BREAKER_SECONDS": "0.5",
                       "YMERA_CONSUMER_RECORD_RESERVE_SECONDS": "0.1", "YMERA_DB_CONNECT_TIMEOUT_SECONDS": "2",
                       "YMERA_RATE_LIMIT_ENABLED": str(request.node.get_closest_marker("rate_limited") is not None)
                       }.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    proxied = Database(make_engine(pg.url_for(pg_url), pool_timeout=2.0,
                                   connect_timeout=settings.db_connect_timeout_seconds))
    container = Container(settings, database=proxied)
    set_container(container)
    try:
        yield Faulty(container, pg, rp, proxied, database)
    finally:
        set_container(None)
        pg.close()
        rp.close()
        proxied.engine.dispose()
        if container.__dict__.get("redis") is not None:
            container.redis.close()


@pytest.fixture
def faulty_client(faulty: Faulty) -> Iterator[Any]:
    from chalice.test import Client

    from app import app

    with Client(app) as client:
        yield client
