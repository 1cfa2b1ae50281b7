"""Heartbeats of a workflow step's token: once on claim, then bounded by the cadence, never raising."""

from __future__ import annotations

from chalicelib.services.processing import Heartbeat


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_beats_on_claim_then_at_most_once_per_period() -> None:
    clock, sent = Clock(), []
    beat = Heartbeat(lambda: sent.append(clock.now), every_seconds=60, clock=clock)
    beat.beat()  # the claim
    for t in range(0, 181, 5):  # the agent asks whether it was cancelled every 5 s for 3 minutes
        clock.now = float(t)
        beat.maybe(clock.now)
    assert sent == [0.0, 60.0, 120.0, 180.0]


def test_a_failed_heartbeat_is_not_the_tasks_failure() -> None:
    def broken() -> None:
        raise ConnectionError("endpoint down")

    beat = Heartbeat(broken, every_seconds=1, clock=Clock())
    beat.beat()
    beat.maybe(5.0)
    assert beat.sent == 0
