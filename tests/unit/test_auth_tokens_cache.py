"""Verified tokens are remembered per token string; a remembered token is still refused once expired,
as the wrong type, or when any byte of it differs."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest

from chalicelib.auth.tokens import ACCESS, REFRESH, TokenService
from chalicelib.errors import AuthenticationError

SECRET = "unit-secret-" + "u" * 40


class Clock:
    """Starts at the real time: tokens are minted by it and PyJWT checks their first decode against it."""

    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc).timestamp()

    def __call__(self) -> float:
        return self.now


def service(clock: Clock, secret: str = SECRET) -> TokenService:
    return TokenService(secret, issuer="ymera", audience="ymera-api", access_ttl=900, refresh_ttl=3600, clock=clock)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def mint(tokens: TokenService, token_type: str = ACCESS) -> str:
    return tokens.mint(uuid.uuid4(), "user", token_type, family="f", version=2).token


def test_a_remembered_token_is_refused_from_the_second_it_expires(clock: Clock) -> None:
    tokens = service(clock)
    token = mint(tokens)
    claims = tokens.verify(token, ACCESS)
    clock.now = claims.expires_at.timestamp() - 1
    assert tokens.verify(token, ACCESS) == claims  # remembered, still valid
    clock.now = claims.expires_at.timestamp()
    with pytest.raises(AuthenticationError, match="invalid or expired token"):
        tokens.verify(token, ACCESS)


@pytest.mark.parametrize(("issued", "expected"), [(ACCESS, REFRESH), (REFRESH, ACCESS)])
def test_a_remembered_token_never_stands_in_for_the_other_type(clock: Clock, issued: str, expected: str) -> None:
    tokens = service(clock)
    token = mint(tokens, issued)
    assert tokens.verify(token, issued).token_type == issued
    with pytest.raises(AuthenticationError):
        tokens.verify(token, expected)


def test_a_token_one_byte_off_a_remembered_one_is_refused(clock: Clock) -> None:
    tokens = service(clock)
    token = mint(tokens)
    tokens.verify(token, ACCESS)
    head, payload, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    with pytest.raises(AuthenticationError):
        tokens.verify(f"{head}.{payload}.{flipped}", ACCESS)


def test_another_secret_does_not_share_what_was_remembered(clock: Clock) -> None:
    token = mint(service(clock))
    service(clock).verify(token, ACCESS)
    rotated = service(clock, secret="rotated-" + "r" * 40)
    with pytest.raises(AuthenticationError):
        rotated.verify(token, ACCESS)
