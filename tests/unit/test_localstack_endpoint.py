"""`--localstack` resolves LocalStack's endpoint with localstack-client, as LocalStack's own tools do."""

from __future__ import annotations

import pytest

from infra.local.emulator import localstack_url


def test_default_is_the_local_edge_port(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ENDPOINT_URL", "LOCALSTACK_HOST", "USE_SSL"):
        monkeypatch.delenv(var, raising=False)
    assert localstack_url() == "http://localhost:4566"


def test_follows_localstack_host_and_use_ssl(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN LocalStack published elsewhere with TLS, as its docs configure it
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("LOCALSTACK_HOST", "127.0.0.1:14566")
    monkeypatch.setenv("USE_SSL", "true")
    # THEN the local runtime targets exactly that edge URL
    assert localstack_url() == "https://127.0.0.1:14566"
