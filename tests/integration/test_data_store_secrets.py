"""The database and Redis URLs from Secrets Manager (moto), with TLS required outside development."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from sqlalchemy import text

from chalicelib.auth.secrets import load_database_url, load_redis_url
from chalicelib.config import ConfigError, Settings
from chalicelib.container import Container

JWT = "j" * 40


@pytest.fixture
def secretsmanager(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="us-east-1")


def put(client: Any, value: str) -> str:
    return str(client.create_secret(Name=f"ymera/prod/db-{uuid.uuid4().hex[:6]}", SecretString=value)["ARN"])


def test_no_database_url_is_needed_when_its_secret_is_named() -> None:
    settings = Settings(stage="prod", database_url="", database_url_secret_arn="arn:aws:sm:x", jwt_secret=JWT)
    assert settings.database_url == ""
    with pytest.raises(ValueError, match="YMERA_DATABASE_URL_SECRET_ARN"):
        Settings(stage="prod", database_url="", jwt_secret=JWT)


def test_the_database_url_comes_from_secrets_manager_and_the_container_uses_it(secretsmanager: Any,
                                                                               pg_url: str) -> None:
    arn = put(secretsmanager, json.dumps({"url": pg_url}))
    settings = Settings(stage="test", database_url="", database_url_secret_arn=arn)
    container = Container(settings)
    assert str(container.db.engine.url.database) == pg_url.rsplit("/", 1)[1]
    with container.db.read() as session:
        assert session.execute(text("SELECT 1")).scalar() == 1
    container.db.engine.dispose()


def test_an_rds_managed_secret_becomes_a_tls_url(secretsmanager: Any) -> None:
    arn = put(secretsmanager, json.dumps({"username": "ymera", "password": "p@ss/word", "host": "db.internal",
                                          "port": 5432, "dbname": "ymera", "engine": "postgres"}))
    url = load_database_url(Settings(stage="prod", database_url="", database_url_secret_arn=arn, jwt_secret=JWT),
                            secretsmanager)
    assert url == "postgresql+psycopg://ymera:p%40ss%2Fword@db.internal:5432/ymera?sslmode=require"


def test_a_plain_text_url_from_secrets_manager_is_refused_outside_development(secretsmanager: Any) -> None:
    db_arn = put(secretsmanager, "postgresql://ymera:secret@db.internal/ymera")
    redis_arn = put(secretsmanager, json.dumps({"url": "redis://cache.internal:6379/0"}))
    prod = Settings(stage="prod", database_url="", database_url_secret_arn=db_arn, redis_url_secret_arn=redis_arn,
                    jwt_secret=JWT)
    with pytest.raises(ConfigError, match="sslmode=require") as info:
        load_database_url(prod, secretsmanager)
    assert "secret@" not in str(info.value)
    with pytest.raises(ConfigError, match="rediss://"):
        load_redis_url(prod, secretsmanager)
    dev = prod.model_copy(update={"stage": "development"})
    assert load_redis_url(dev, secretsmanager) == "redis://cache.internal:6379/0"


def test_the_redis_url_comes_from_secrets_manager(secretsmanager: Any, redis_url: str) -> None:
    arn = put(secretsmanager, redis_url)
    container = Container(Settings(stage="test", database_url="sqlite://", redis_url="", redis_url_secret_arn=arn))
    assert container.redis is not None and container.redis.ping()


def test_an_unreadable_secret_names_the_setting_not_the_arn(secretsmanager: Any) -> None:
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:ymera/prod/missing-AbCdEf"
    with pytest.raises(ConfigError, match="cannot read the database URL") as info:
        load_database_url(Settings(stage="prod", database_url="", database_url_secret_arn=arn, jwt_secret=JWT),
                          secretsmanager)
    assert "123456789012" not in str(info.value)
