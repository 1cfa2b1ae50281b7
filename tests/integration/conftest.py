from __future__ import annotations

import json
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

PREFIX = "ymera-test"


@pytest.fixture(scope="session")
def database(pg_url: str) -> Iterator[Database]:
    db = Database(make_engine(pg_url))
    yield db
    db.engine.dispose()


@pytest.fixture
def db(database: Database) -> Database:
    """The session database, emptied before each test."""
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with database.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} CASCADE"))
    return database


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto in-process with the manifest's queues bootstrapped (short visibility for retry tests)."""
    import boto3
    from moto import mock_aws

    from infra.bootstrap import bootstrap

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        bootstrap(sqs, PREFIX, visibility_timeout=1)
        yield sqs


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, pg_url: str, redis_url: str) -> Settings:
    from tests.conftest import REDIS_PREFIX, TEST_SECRET

    for key, value in {"DATABASE_URL": pg_url, "REDIS_URL": redis_url, "YMERA_STAGE": "test",
                       "YMERA_REDIS_KEY_PREFIX": f"{REDIS_PREFIX}{uuid.uuid4().hex[:6]}:",
                       "YMERA_JWT_SECRET": TEST_SECRET, "YMERA_BCRYPT_ROUNDS": "4",
                       "YMERA_QUEUE_PREFIX": PREFIX}.items():
        monkeypatch.setenv(key, value)
    return Settings()


@pytest.fixture
def container(settings: Settings, db: Database, aws: Any) -> Iterator[Container]:
    c = Container(settings, database=db)
    set_container(c)
    yield c
    set_container(None)


@dataclass
class Api:
    """A thin client over chalice.test.Client that speaks JSON and remembers a token."""

    client: Any
    token: str | None = None

    def call(self, method: str, path: str, body: Any = None, *, raw: str | None = None,
             token: str | None = None, headers: dict[str, str] | None = None) -> Any:
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        bearer = token if token is not None else self.token
        if bearer:
            hdrs["Authorization"] = f"Bearer {bearer}"
        payload = raw if raw is not None else (json.dumps(body) if body is not None else None)
        return getattr(self.client.http, method.lower())(path, headers=hdrs, body=payload)

    def signup(self, username: str | None = None, password: str = "correct horse battery") -> dict[str, Any]:
        username = username or f"user{uuid.uuid4().hex[:8]}"
        r = self.call("POST", "/auth/register", {"username": username, "email": f"{username}@example.com",
                                                 "password": password})
        assert r.status_code == 201, r.json_body
        r = self.call("POST", "/auth/login", {"username": username, "password": password})
        assert r.status_code == 200, r.json_body
        self.token = r.json_body["access_token"]
        return {"username": username, **r.json_body}

    def agent(self, agent_type: str = "validation", name: str = "agent") -> dict[str, Any]:
        r = self.call("POST", "/agents", {"name": name, "type": agent_type})
        assert r.status_code == 201, r.json_body
        return dict(r.json_body)


@pytest.fixture
def chalice_client(container: Container) -> Iterator[Any]:
    from chalice.test import Client

    from app import app

    with Client(app) as client:
        yield client


@pytest.fixture
def api(chalice_client: Any) -> Api:
    return Api(chalice_client)


@pytest.fixture
def other_api(chalice_client: Any) -> Api:
    return Api(chalice_client)


def sqs_event(records: list[tuple[str, str]], agent_type: str = "validation",
              receive_count: int = 1) -> dict[str, Any]:
    """A Lambda SQS event with distinct message ids: [(message_id, body)]."""
    arn = f"arn:aws:sqs:us-east-1:123456789012:{PREFIX}-agent-{agent_type}"
    return {"Records": [
        {"messageId": mid, "receiptHandle": f"rh-{mid}", "body": body,
         "attributes": {"ApproximateReceiveCount": str(receive_count), "SentTimestamp": "1700000000000",
                        "SenderId": "test", "ApproximateFirstReceiveTimestamp": "1700000000000"},
         "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs", "eventSourceARN": arn,
         "awsRegion": "us-east-1"}
        for mid, body in records
    ]}


class FakeContext:
    function_name = "ymera-test-agent-consumer"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:ymera-test-agent-consumer"
    aws_request_id = "test-request"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000
