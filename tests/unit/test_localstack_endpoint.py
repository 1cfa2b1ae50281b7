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


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_warming_endpoint_is_waited_for_not_reported_missing(caplog: pytest.LogCaptureFixture) -> None:
    """GIVEN an endpoint that starts answering only after a while (LocalStack warming up)
    WHEN the local runtime checks it THEN it waits, says what it waits for, and goes on."""
    import threading

    from moto.server import ThreadedMotoServer

    from infra.local.emulator import check_endpoint

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    late = threading.Timer(1.5, server.start)
    late.start()
    try:
        with caplog.at_level("INFO", logger="infra.local.emulator"):
            check_endpoint(f"http://127.0.0.1:{port}", wait_seconds=30)
        assert any("waiting for the AWS endpoint" in r.getMessage() for r in caplog.records)
    finally:
        late.join()
        server.stop()


def test_an_endpoint_that_never_answers_fails_with_the_fix_after_the_wait() -> None:
    from infra.local.emulator import EndpointError, check_endpoint

    now = [0.0]
    with pytest.raises(EndpointError, match="within 2 s.*YMERA_ENDPOINT_WAIT_SECONDS"):
        check_endpoint(f"http://127.0.0.1:{_free_port()}", wait_seconds=2, clock=lambda: now[0],
                       sleep=lambda s: now.__setitem__(0, now[0] + s))
