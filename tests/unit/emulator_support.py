"""Shared by the tests that start make run's embedded moto server in this process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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


def recorded_spawns(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """infra.local.functions' Popen replaced by one that starts nothing: the argv of each child it was asked
    for, in order."""
    from infra.local import functions

    started: list[list[str]] = []

    class Popen:
        def __init__(self, argv: list[str], **kwargs: Any) -> None:
            started.append(argv)
            self.pid = 1

    monkeypatch.setattr(functions.subprocess, "Popen", Popen)
    return started
