"""The JWT signing secret from AWS Secrets Manager (moto), fetched once per container."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import jwt
import pytest
from moto import mock_aws

from chalicelib.auth.secrets import load_jwt_secret
from chalicelib.auth.tokens import ACCESS
from chalicelib.config import ConfigError, Settings
from chalicelib.container import Container

SM_SECRET = "sm-secret-" + "s" * 40


def prod_settings(**overrides: Any) -> Settings:
    """A production-stage configuration with no YMERA_JWT_SECRET at all, only the ARN."""
    values: dict[str, Any] = {"stage": "production", "database_url": "sqlite://", "jwt_secret": "", **overrides}
    return Settings(**values)


@pytest.fixture
def secretsmanager(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="us-east-1")


def test_without_an_arn_a_short_secret_is_refused_outside_development() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        prod_settings(jwt_secret="short")


@pytest.mark.parametrize("stored", [SM_SECRET, json.dumps({"jwt_secret": SM_SECRET, "other": "x"})])
def test_the_secret_is_read_from_secrets_manager_and_signs_tokens(secretsmanager: Any, stored: str) -> None:
    arn = secretsmanager.create_secret(Name=f"ymera/jwt-{uuid.uuid4().hex[:6]}", SecretString=stored)["ARN"]
    container = Container(prod_settings(jwt_secret_arn=arn))
    token = container.tokens.issue(uuid.uuid4(), "user", ACCESS)
    assert jwt.decode(token, SM_SECRET, algorithms=["HS256"], audience="ymera-api")["typ"] == "access"

    # Fetched once per container: later rotations/deletions do not change a running container's key...
    secretsmanager.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
    assert container.tokens.verify(token, ACCESS).token_type == "access"
    # ...and a new container (cold start) reads it again, and fails loudly when it is gone.
    with pytest.raises(ConfigError, match="Secrets Manager"):
        _ = Container(prod_settings(jwt_secret_arn=arn)).tokens


@pytest.mark.parametrize(("stored", "message"), [
    ("too-short", "at least 32 bytes"),
    (json.dumps({"secret": SM_SECRET}), "no string field 'jwt_secret'"),
    ("{not json", "not valid JSON"),
])
def test_unusable_secrets_fail_the_cold_start(secretsmanager: Any, stored: str, message: str) -> None:
    arn = secretsmanager.create_secret(Name=f"ymera/bad-{uuid.uuid4().hex[:6]}", SecretString=stored)["ARN"]
    with pytest.raises(ConfigError, match=message):
        load_jwt_secret(prod_settings(jwt_secret_arn=arn))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_secret_is_fetched_through_aws_endpoint_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Against a moto *server*: only reachable through AWS_ENDPOINT_URL, as LocalStack would be."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=endpoint)
        arn = client.create_secret(Name="ymera/jwt", SecretString=SM_SECRET)["ARN"]
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        monkeypatch.setenv("YMERA_JWT_SECRET_ARN", arn)
        monkeypatch.setenv("YMERA_JWT_SECRET", "")
        monkeypatch.setenv("YMERA_STAGE", "production")
        settings = Settings()
        assert settings.aws_endpoint_url == endpoint
        assert load_jwt_secret(settings) == SM_SECRET
    finally:
        server.stop()
