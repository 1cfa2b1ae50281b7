"""The notifier's per-round costs (chalicelib.events.notifier): a round follows every NOTIFY, a few per task, so
its lease is renewed from Redis only every LEASE_RENEW_SECONDS, and a NOTIFY's burst is gathered into one round."""

from __future__ import annotations

from typing import Any

from chalicelib.events.notifier import LEASE_RENEW_SECONDS, LEASE_SECONDS, Notifier, Report


class FakeRedis:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.data: dict[str, bytes] = {}

    def set(self, key: str, value: str, nx: bool = False, ex: int | None = None) -> bool:
        self.calls.append("set")
        if nx and key in self.data:
            return False
        self.data[key] = value.encode()
        return True

    def get(self, key: str) -> bytes | None:
        self.calls.append("get")
        return self.data.get(key)

    def expire(self, key: str, seconds: int) -> bool:
        self.calls.append("expire")
        return key in self.data

    def delete(self, key: str) -> int:
        self.calls.append("delete")
        return 1 if self.data.pop(key, None) is not None else 0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Listener:
    def __init__(self, wakes: list[int]) -> None:
        self.wakes = list(wakes)
        self.waits: list[float] = []

    def wait(self, timeout: float) -> int:
        self.waits.append(timeout)
        return self.wakes.pop(0) if self.wakes else 0

    def close(self) -> None:
        pass


def notifier(redis: Any, clock: Clock, listener: Listener | None = None, **kw: Any) -> Notifier:
    return Notifier(db=None, sinks=[], listener=listener or Listener([]), redis=redis,  # type: ignore[arg-type]
                    clock=clock, **kw)


def test_the_lease_is_renewed_from_redis_only_every_few_seconds() -> None:
    redis, clock = FakeRedis(), Clock()
    n = notifier(redis, clock)
    assert n._hold_lease()
    assert redis.calls == ["set"]  # taken
    for _ in range(50):  # rounds within LEASE_RENEW_SECONDS: no Redis at all
        clock.now += LEASE_RENEW_SECONDS / 100
        assert n._hold_lease()
    assert redis.calls == ["set"]
    clock.now += LEASE_RENEW_SECONDS
    assert n._hold_lease()
    assert redis.calls == ["set", "set", "get", "expire"]  # renewed: it is still ours
    assert LEASE_SECONDS - LEASE_RENEW_SECONDS >= 2 * LEASE_RENEW_SECONDS  # trusted only well within the lease


def test_a_lease_someone_else_holds_is_not_trusted_and_released_only_if_ours() -> None:
    redis, clock = FakeRedis(), Clock()
    other = notifier(redis, clock)
    assert other._hold_lease()
    n = notifier(redis, clock)
    assert not n._hold_lease()
    clock.now += 0.1
    assert not n._hold_lease()  # asks Redis again: a refusal is never remembered as "held"
    n._release_lease()
    assert redis.data  # not ours: left alone
    other._release_lease()
    assert not redis.data


class Counting(Notifier):
    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.rounds = 0

    def round(self, report: Report) -> None:
        self.rounds += 1

    def _hold_lease(self) -> bool:
        return True

    def _release_lease(self) -> None:
        pass


class Context:
    def __init__(self, rounds: int, notifier_: Counting) -> None:
        self.n, self.limit = notifier_, rounds

    def get_remaining_time_in_millis(self) -> int:
        return 60_000 if self.n.rounds < self.limit else 0


def test_after_a_notify_it_gathers_the_burst_then_drains_its_notifies_before_the_round() -> None:
    slept: list[float] = []
    listener = Listener([1, 2, 0, 0])  # woken; two more NOTIFYs arrived while it gathered; then a quiet sweep
    n = Counting(db=None, sinks=[], listener=listener, gather_seconds=0.05, sleep=slept.append,  # type: ignore[arg-type]
                 reserve_ms=0)
    report = n.run(Context(3, n))
    assert slept == [0.05]  # only after the wake-up, never after a quiet sweep
    assert listener.waits[1] == 0.0  # the burst's NOTIFYs taken without waiting: they need no round of their own
    assert n.rounds == 3 and report.notifies == 3


def test_without_a_gather_window_it_delivers_at_once() -> None:
    slept: list[float] = []
    listener = Listener([1, 1])
    n = Counting(db=None, sinks=[], listener=listener, gather_seconds=0.0, sleep=slept.append,  # type: ignore[arg-type]
                 reserve_ms=0)
    n.run(Context(3, n))
    assert slept == []
    assert 0.0 not in listener.waits
