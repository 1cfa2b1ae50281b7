"""services.after_commit: best-effort calls after a commit, made on one background thread, in order."""

from __future__ import annotations

import threading
import time

import pytest

from chalicelib.services.after_commit import AfterCommit


def test_calls_run_in_order_off_the_callers_thread_and_flush_waits_for_them() -> None:
    # GIVEN slow calls queued one after another
    seen: list[tuple[int, str]] = []
    calls = AfterCommit()
    started = time.perf_counter()
    for i in range(3):
        calls.submit(lambda n: (time.sleep(0.05), seen.append((n, threading.current_thread().name))), i)
    # THEN the caller did not wait for them ...
    assert time.perf_counter() - started < 0.05
    # ... and flush() returns once every one ran, in order, on the background thread
    calls.flush()
    assert [n for n, _ in seen] == [0, 1, 2]
    assert {name for _, name in seen} == {"ymera-after-commit"}


def test_a_failing_call_is_logged_and_the_next_still_runs(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[int] = []
    calls = AfterCommit()

    def boom() -> None:
        raise ConnectionError("redis down")

    calls.submit(boom)
    calls.submit(seen.append, 1)
    calls.flush()
    assert seen == [1]
    assert "a call after a commit failed" in caplog.text


def test_flush_without_any_call_returns_at_once() -> None:
    AfterCommit().flush()
