"""Shared fixtures.

Integration tests use the real Postgres and Redis on this machine: a database
of their own (created and dropped by the session) and a Redis db number of
their own (flushed). AWS is moto, in-process. Connection settings can be
overridden with YMERA_TEST_PG_ADMIN_URL and YMERA_TEST_REDIS_URL.
"""

from __future__ import annotations

import io
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TEST_SECRET = "test-secret-" + "x" * 40

# Module-level so `import app` (which checks settings at cold start) works in tests.
# An unset YMERA_STAGE is strict (production rules); the suite runs as the "test" stage, whatever the shell says.
os.environ["YMERA_STAGE"] = "test"
os.environ.setdefault("DATABASE_URL", "sqlite://")
os.environ.setdefault("YMERA_JWT_SECRET", TEST_SECRET)
for _var, _value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "AWS_DEFAULT_REGION": "us-east-1"}.items():
    os.environ[_var] = _value
os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ.pop("AWS_PROFILE", None)

#: The fault-injection suite's fixtures (proxied Postgres and Redis), for tests/integration/test_faults_*.py.
pytest_plugins = ["tests.integration.faults_support"]

PG_ADMIN_URL = os.environ.get("YMERA_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("YMERA_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
#: Keys of this test session; parallel sessions on one Redis never see each other's keys.
REDIS_PREFIX = f"ymera-test-{uuid.uuid4().hex[:8]}:"


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh Postgres database, migrated to head, dropped at the end of the session."""
    from sqlalchemy import create_engine, text

    from chalicelib.db.migrate import upgrade

    name = f"ymera_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    yield REDIS_URL
    for key in client.scan_iter(match=f"{REDIS_PREFIX}*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The app's JSON log lines, formatted exactly as CloudWatch would receive them."""
    import logging

    from chalicelib.observability import logger

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    target = logging.getLogger(logger.name)
    target.addHandler(handler)
    yield stream
    target.removeHandler(handler)


@pytest.fixture(autouse=True)
def _environ_stays_put() -> Iterator[None]:
    """chalice.test.Client swaps `os.environ` for a copy holding the stage's .chalice/config.json variables
    during each request and swaps it back after; two requests on two threads can restore each other's copy,
    leaving the stage's variables (YMERA_STAGE=dev, the secret names) in place for every later test."""
    original = os.environ
    yield
    if os.environ is not original:
        os.environ = original  # type: ignore[assignment]  # noqa: B003 - undoing chalice's own swap
