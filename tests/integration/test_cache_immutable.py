"""Immutable entries (a finished task with its result): an L1 hit costs no Redis round trip, while
an admin clear still reaches them, at once in the clearing process and within the recheck elsewhere."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chalicelib.cache.twolevel import TwoLevelCache
from tests.conftest import REDIS_PREFIX
from tests.integration.redis_trips import CountingRedis
from tests.integration.test_cache_store import Config, Source

NS = "task_results"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def counting(redis_url: str) -> Iterator[CountingRedis]:
    c = CountingRedis.connect(redis_url)
    yield c
    c.close()


@pytest.fixture
def make_cache(counting: CountingRedis, clock: Clock) -> Callable[..., TwoLevelCache]:
    prefix = f"{REDIS_PREFIX}{uuid.uuid4().hex[:6]}:"

    def make(redis_client: Any = counting) -> TwoLevelCache:
        return TwoLevelCache(redis_client, prefix=prefix, ttls={NS: 3600, "agents": 3600}, clock=clock)

    return make


def final(source: Source) -> Callable[[TwoLevelCache], int]:
    def read(cache: TwoLevelCache) -> int:
        value = cache.fetch(NS, "t1", Config, source.load, immutable=lambda c: True)
        assert value is not None
        return value.version

    return read


def test_an_immutable_l1_hit_makes_no_redis_call(make_cache: Callable[..., TwoLevelCache],
                                                 counting: CountingRedis) -> None:
    source = Source()
    cache, read = make_cache(), final(source)
    assert read(cache) == 1 and source.loads == 1
    counting.trips.clear()
    for _ in range(50):
        assert read(cache) == 1
    assert counting.trips == [] and cache.stats.l1_hits == 50


def test_mutable_entries_still_check_their_version_on_every_hit(make_cache: Callable[..., TwoLevelCache],
                                                                counting: CountingRedis) -> None:
    source = Source()
    cache = make_cache()
    cache.fetch("agents", "a1", Config, source.load)
    counting.trips.clear()
    for _ in range(3):
        cache.fetch("agents", "a1", Config, source.load)
    assert counting.trips == [("MGET",)] * 3


def test_an_entry_from_l2_is_immutable_in_the_second_process_too(make_cache: Callable[..., TwoLevelCache],
                                                                  counting: CountingRedis) -> None:
    source = Source()
    one, two, read = make_cache(), make_cache(), final(source)
    read(one)
    assert read(two) == 1 and two.stats.l2_hits == 1 and source.loads == 1
    counting.trips.clear()
    read(two)
    assert counting.trips == []


def test_the_namespace_token_is_rechecked_once_per_interval(make_cache: Callable[..., TwoLevelCache],
                                                            counting: CountingRedis, clock: Clock) -> None:
    source = Source()
    cache, read = make_cache(), final(source)
    read(cache)
    counting.trips.clear()
    clock.now += 1.0  # the recheck interval (1 s by default) has passed
    read(cache)
    read(cache)
    assert counting.trips == [("MGET",)] and source.loads == 1


def test_an_admin_clear_reaches_immutable_entries(make_cache: Callable[..., TwoLevelCache], clock: Clock) -> None:
    """GIVEN a finished task cached in two processes, and its row fixed by hand in the database, WHEN an
    admin clears the namespace in one process, THEN that process reloads at once and the other within
    the recheck interval."""
    source = Source()
    admin, other, read = make_cache(), make_cache(), final(source)
    read(admin)
    read(other)
    source.version = 2  # a manual database fix behind the cache's back
    assert admin.clear([NS]) == [NS]
    assert read(admin) == 2
    clock.now += 0.5
    assert read(other) == 1  # within the interval its L1 copy is still served without Redis
    clock.now += 0.5
    assert read(other) == 2
