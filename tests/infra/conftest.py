"""Fixtures for the deploy tests: fake AWS credentials, moto in-process, and a moto server (the emulator)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

REGION = "us-east-1"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials that can only reach moto; nothing from the developer's own AWS setup."""
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_REGION", "DATABASE_URL", "REDIS_URL"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def aws_clients(aws_env: None) -> Iterator[dict[str, Any]]:
    """moto in-process: the clients infra.deploy.clients() would make."""
    from moto import mock_aws

    with mock_aws():
        yield {name: boto3.client(name, region_name=REGION)
               for name in ("sts", "s3", "secretsmanager", "cloudformation", "sqs", "sns", "apigateway", "lambda")}


@pytest.fixture
def moto_server(aws_env: None) -> Iterator[str]:
    """The embedded emulator's engine (moto server mode) on a free port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    import requests

    requests.post(f"{url}/moto-api/reset", timeout=10)  # moto's backends are per process, not per server
    try:
        yield url
    finally:
        server.stop()
