"""The outbound guard (chalicelib.net.outbound): where user-chosen requests may go, and for how long.

Issue 7 §1: an agent's base_url could point at 169.254.169.254, 127.0.0.1 or any private service,
over plain http, and urllib's per-socket-operation timeout let a slow server hold a consumer far past
the call's limit.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterator

import pytest

from chalicelib.errors import AgentError
from chalicelib.net.outbound import (
    OutboundPolicy,
    OutboundRefusedError,
    OutboundTimeoutError,
    classify,
    post,
)
from chalicelib.providers.config import ProviderConfig
from chalicelib.providers.registry import Providers
from tests.drip_server import DripServer
from tests.llm_server import LLMServer, llm_settings

PRODUCTION = {"stage": "production", "jwt_secret": "x" * 40}


@pytest.fixture
def server() -> Iterator[LLMServer]:
    with LLMServer() as s:
        yield s


@pytest.mark.parametrize(("address", "reason"), [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"), ("172.16.0.1", "private"),
    ("192.168.1.1", "private"), ("fd12::1", "private"), ("169.254.10.1", "link-local"), ("fe80::1", "link-local"),
    ("100.64.0.1", "cgnat"), ("169.254.169.254", "metadata"), ("fd00:ec2::254", "metadata"),
    ("::ffff:169.254.169.254", "metadata"), ("::ffff:127.0.0.1", "loopback"), ("0.0.0.0", "reserved"),
    ("224.0.0.1", "reserved"), ("240.0.0.1", "reserved"), ("8.8.8.8", None), ("2606:4700::1111", None),
])
def test_addresses_are_classified(address: str, reason: str | None) -> None:
    assert classify(ipaddress.ip_address(address)) == reason


def test_metadata_and_reserved_stay_refused_when_private_ranges_are_allowed() -> None:
    relaxed = OutboundPolicy(allow_private=True, allow_http=True)
    relaxed.check_address("10.0.0.5")
    relaxed.check_address("127.0.0.1")
    for address in ("169.254.169.254", "fd00:ec2::254", "0.0.0.0", "224.0.0.1"):
        with pytest.raises(OutboundRefusedError):
            relaxed.check_address(address)


def test_outside_development_a_users_endpoint_must_be_https(server: LLMServer) -> None:
    p = Providers(llm_settings(**PRODUCTION), environ={})
    with pytest.raises(AgentError) as caught:
        p.session(ProviderConfig(base_url=server.url, model="m")).complete("hi")
    assert caught.value.code == "PROVIDER_ENDPOINT_REFUSED" and server.calls == 0


def test_outside_development_loopback_and_private_addresses_are_refused(server: LLMServer) -> None:
    """The stage default: no private ranges outside development (the llm server listens on 127.0.0.1)."""
    p = Providers(llm_settings(**PRODUCTION), environ={},
                  outbound=OutboundPolicy(allow_private=llm_settings(**PRODUCTION).outbound_private_allowed,
                                          allow_http=True))
    with pytest.raises(AgentError) as caught:
        p.session(ProviderConfig(base_url=server.url, model="m")).complete("hi")
    assert caught.value.code == "PROVIDER_ENDPOINT_REFUSED" and caught.value.details["reason"] == "loopback"
    assert server.calls == 0
    metadata = ProviderConfig(base_url="http://169.254.169.254/latest", model="m")
    with pytest.raises(AgentError) as caught:
        Providers(llm_settings(), environ={}).session(metadata).complete("hi")  # even in development
    assert caught.value.code == "PROVIDER_ENDPOINT_REFUSED" and caught.value.details["reason"] == "metadata"


def test_the_setting_allows_private_ranges_for_self_hosted_models(server: LLMServer) -> None:
    settings = llm_settings(**PRODUCTION, outbound_allow_private=True)
    assert settings.outbound_private_allowed and not llm_settings(**PRODUCTION).outbound_private_allowed
    assert llm_settings().outbound_private_allowed  # development default
    p = Providers(settings, environ={}, outbound=OutboundPolicy(allow_private=True, allow_http=True))
    assert p.session(ProviderConfig(base_url=server.url, model="m")).complete("hi").text == "ok"


def test_the_name_is_resolved_once_and_the_checked_address_is_what_we_connect_to() -> None:
    """DNS rebinding: a name that answers a public address to the check and 127.0.0.1 to the connect."""
    answers = [["8.8.8.8"], ["127.0.0.1"]]
    resolved: list[str] = []
    connected: list[tuple[str, int]] = []

    def resolver(host: str, port: int) -> list[str]:
        resolved.append(host)
        return answers.pop(0)

    def connector(address: tuple[str, int], timeout: float) -> socket.socket:
        connected.append(address)
        raise ConnectionRefusedError("test: no network")

    policy = OutboundPolicy(resolver=resolver, connector=connector)
    with pytest.raises(Exception):  # noqa: B017 - the connection is refused by the fake either way
        post("https://rebind.example/v1/chat/completions", b"{}", {}, timeout=1, max_bytes=10, policy=policy)
    assert resolved == ["rebind.example"] and connected == [("8.8.8.8", 443)]
    with pytest.raises(OutboundRefusedError):  # the next resolution points inside: refused, never connected
        post("https://rebind.example/v1/chat/completions", b"{}", {}, timeout=1, max_bytes=10, policy=policy)
    assert connected == [("8.8.8.8", 443)]


def test_the_connected_peer_is_checked_not_only_the_name(server: LLMServer) -> None:
    """A resolver that says 'public' while the socket really reaches loopback: the peer address decides."""
    port = int(server.url.split(":")[2].split("/")[0])
    policy = OutboundPolicy(allow_http=True, resolver=lambda host, p: ["8.8.8.8"],
                            connector=lambda address, timeout: socket.create_connection(("127.0.0.1", port), timeout))
    with pytest.raises(OutboundRefusedError) as caught:
        post(f"http://public.example:{port}/v1/chat/completions", b"{}", {}, timeout=2, max_bytes=10, policy=policy)
    assert caught.value.details["reason"] == "loopback" and server.calls == 0


@pytest.mark.parametrize("drip_headers", [False, True])
def test_a_slow_drip_server_cannot_stretch_the_deadline(drip_headers: bool) -> None:
    """100 bytes at one per 0.1 s would take 10 s (each byte resets urllib's per-operation timeout)."""
    with DripServer(interval=0.1, body_bytes=100, drip_headers=drip_headers) as drip:
        started = time.monotonic()
        with pytest.raises(OutboundTimeoutError):
            post(f"{drip.url}/chat/completions", b"{}", {}, timeout=1.0, max_bytes=1000,
                 policy=OutboundPolicy(allow_private=True, allow_http=True))
        assert time.monotonic() - started < 1.6


def test_a_model_call_against_a_slow_drip_server_ends_at_its_timeout() -> None:
    with DripServer(interval=0.1, body_bytes=100) as drip:
        p = Providers(llm_settings(llm_max_attempts=1), environ={})
        started = time.monotonic()
        with pytest.raises(AgentError) as caught:
            p.session(ProviderConfig(base_url=drip.url, model="m", timeout_seconds=1.0)).complete("hi")
        elapsed = time.monotonic() - started
    assert caught.value.code == "PROVIDER_TIMEOUT" and elapsed < 1.6
