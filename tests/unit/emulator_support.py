"""Shared by the tests that start make run's embedded moto server in this process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

#: fake credentials, the default region, and no endpoint or moto port from the caller's environment.
EMULATOR_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                "MOTO_PORT": "", "AWS_ENDPOINT_URL": ""}


@contextmanager
def emulator_env() -> Iterator[None]:
    """EMULATOR_ENV for the block (module-scoped fixtures cannot take `monkeypatch`)."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in EMULATOR_ENV.items():
            mp.setenv(key, value)
        yield
