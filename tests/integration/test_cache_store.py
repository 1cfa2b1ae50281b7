"""The two-level cache against real Redis: hits, misses, TTLs, global invalidation, outages.

Two TwoLevelCache objects on one Redis stand for two processes (each has its own
L1); the subprocess test in test_cache_two_process.py does the same with real
processes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from chalicelib.cache.twolevel import TwoLevelCache
from chalicelib.errors import DependencyUnavailableError
from chalicelib.schemas.common import PublicModel

CLOSED_PORT_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connection refused at once


class Config(PublicModel):
    version: int
    settings: dict[str, Any] = {}


class Source:
    """Postgres stand-in: the truth, counting how often the cache had to ask it."""

    def __init__(self) -> None:
        self.version = 1
        self.loads = 0

    def load(self) -> Config:
        self.loads += 1
        return Config(version=self.version, settings={"depth": self.version})


class FlakyRedis:
    """The real client, except that it refuses every command while `down` (a partition of this process)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.down = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise redis.ConnectionError("partitioned")
            result = attr(*args, **kwargs)
            return FlakyPipeline(self, result) if name == "pipeline" else result

        return call


class FlakyPipeline:
    def __init__(self, owner: FlakyRedis, pipe: Any) -> None:
        self.owner = owner
        self.pipe = pipe

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pipe, name)

    def execute(self) -> Any:
        if self.owner.down:
            raise redis.ConnectionError("partitioned")
        return self.pipe.execute()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def make_cache(client: redis.Redis) -> Callable[..., TwoLevelCache]:
    from tests.conftest import REDIS_PREFIX

    prefix = f"{REDIS_PREFIX}{uuid.uuid4().hex[:6]}:"

    def make(redis_client: Any = client, ttl: int = 3600, **kwargs: Any) -> TwoLevelCache:
        return TwoLevelCache(redis_client, prefix=prefix, ttls={"agents": ttl, "task_results": ttl}, **kwargs)

    return make


def read(cache: TwoLevelCache, source: Source, key: str = "a1") -> int:
    value = cache.fetch("agents", key, Config, source.load)
    assert value is not None
    return value.version


def test_miss_then_l1_hit_then_l2_hit_in_another_process(make_cache: Callable[..., TwoLevelCache]) -> None:
    source = Source()
    one, two = make_cache(), make_cache()
    assert read(one, source) == 1 and source.loads == 1 and one.stats.misses == 1
    assert read(one, source) == 1 and source.loads == 1 and one.stats.l1_hits == 1
    # The other process has an empty L1 but shares L2: no database read.
    assert read(two, source) == 1 and source.loads == 1 and two.stats.l2_hits == 1
    assert read(two, source) == 1 and two.stats.l1_hits == 1


def test_values_keep_their_json_shape(make_cache: Callable[..., TwoLevelCache]) -> None:
    source = Source()
    make_cache().fetch("agents", "a1", Config, source.load)
    value = make_cache().fetch("agents", "a1", Config, source.load)  # decoded from L2
    assert value == Config(version=1, settings={"depth": 1})


def test_entries_expire_after_the_namespace_ttl(make_cache: Callable[..., TwoLevelCache]) -> None:
    source = Source()
    one, two = make_cache(ttl=1), make_cache(ttl=1)
    read(one, source)
    read(two, source)  # L2 hit, fills two's L1
    assert source.loads == 1
    time.sleep(1.1)
    assert read(one, source) == 1 and read(two, source) == 1
    assert source.loads == 2  # both levels expired; the second reader found the fresh L2 entry


def test_invalidate_is_seen_by_another_process_l1_at_once(make_cache: Callable[..., TwoLevelCache]) -> None:
    source = Source()
    writer, reader = make_cache(), make_cache()
    read(reader, source)
    assert read(reader, source) == 1 and reader.stats.l1_hits == 1  # reader's L1 is warm
    for version in range(2, 6):
        source.version = version  # "commit"
        writer.invalidate("agents", "a1")  # then bump
        assert read(reader, source) == version
        assert read(reader, source) == version  # and cached again
    assert reader.stats.l1_hits == 5


def test_invalidation_is_per_key(make_cache: Callable[..., TwoLevelCache]) -> None:
    source = Source()
    cache = make_cache()
    read(cache, source, "a1")
    read(cache, source, "a2")
    cache.invalidate("agents", "a1")
    loads = source.loads
    read(cache, source, "a2")
    assert source.loads == loads
    read(cache, source, "a1")
    assert source.loads == loads + 1


def test_a_reader_racing_a_writer_cannot_cache_the_old_value(make_cache: Callable[..., TwoLevelCache]) -> None:
    """GIVEN a reader that loaded the old row just before a writer committed and bumped,
    WHEN it stores what it loaded, THEN nobody reads that value afterwards."""
    source = Source()
    reader, writer, other = make_cache(), make_cache(), make_cache()

    def slow_load() -> Config:
        old = source.load()  # the reader's SELECT sees version 1 ...
        source.version = 2  # ... then the writer commits ...
        writer.invalidate("agents", "a1")  # ... and bumps, all before the reader stores
        return old

    assert reader.fetch("agents", "a1", Config, slow_load) == Config(version=1, settings={"depth": 1})
    assert read(other, source) == 2
    assert read(reader, source) == 2


def test_clear_namespace_makes_every_process_miss(make_cache: Callable[..., TwoLevelCache]) -> None:
    source, results = Source(), Source()
    admin, reader = make_cache(), make_cache()
    read(reader, source)
    reader.fetch("task_results", "t1", Config, results.load)
    source.version = 2  # changed behind the cache's back (e.g. a manual database fix)
    assert read(reader, source) == 1  # stale until cleared: that is what the admin endpoint is for
    assert admin.clear(["agents"]) == ["agents"]
    assert read(reader, source) == 2
    reader.fetch("task_results", "t1", Config, results.load)
    assert results.loads == 1  # the other namespace was not touched


def test_lost_redis_state_never_revives_an_old_l1_entry(make_cache: Callable[..., TwoLevelCache],
                                                        client: redis.Redis) -> None:
    """Version tokens are random, not counters: after Redis loses its keys (restart, eviction) the
    new tokens match nothing cached before, even if the bump for a change was lost with them."""
    source = Source()
    reader, other = make_cache(), make_cache()
    read(reader, source)
    read(reader, source)
    source.version = 2  # a change whose bump was lost with the Redis state
    prefix = reader._prefix  # the test needs the key space to wipe it, nothing else
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)
    assert read(other, source) == 2  # re-creates the tokens
    assert read(reader, source) == 2  # its L1 entry was tagged with tokens that no longer exist


def test_redis_down_serves_the_loader_every_time(make_cache: Callable[..., TwoLevelCache]) -> None:
    source = Source()
    cache = make_cache(redis.Redis.from_url(CLOSED_PORT_URL, socket_connect_timeout=0.5))
    assert [read(cache, source) for _ in range(3)] == [1, 1, 1]
    source.version = 2
    cache.invalidate("agents", "a1")  # does not raise: the write already committed
    assert read(cache, source) == 2
    assert source.loads == 4 and cache.stats.bypasses == 4 and cache.stats.l1_hits == 0
    with pytest.raises(DependencyUnavailableError):
        cache.clear(["agents"])


def test_a_bump_that_failed_is_delivered_when_redis_is_back(make_cache: Callable[..., TwoLevelCache],
                                                            client: redis.Redis) -> None:
    """GIVEN a writer cut off from Redis while it commits a change, THEN its own reads bypass the cache,
    and its first contact with Redis afterwards delivers the bump before anything else."""
    source = Source()
    flaky = FlakyRedis(client)
    writer, reader = make_cache(flaky, breaker_seconds=0), make_cache()
    read(writer, source)
    read(reader, source)
    read(reader, source)

    flaky.down = True
    source.version = 2
    writer.invalidate("agents", "a1")
    assert read(writer, source) == 2  # its own L1 entry was dropped; Redis unreachable: bypass
    flaky.down = False

    assert read(writer, source) == 2  # flushes the pending bump first
    assert read(reader, source) == 2


def test_breaker_skips_redis_for_a_while_after_an_error(make_cache: Callable[..., TwoLevelCache],
                                                        client: redis.Redis) -> None:
    source = Source()
    flaky = FlakyRedis(client)
    cache = make_cache(flaky, breaker_seconds=60)
    read(cache, source)
    read(cache, source)
    flaky.down = True
    assert read(cache, source) == 1  # the failed version check trips the breaker ...
    flaky.down = False
    assert read(cache, source) == 1  # ... and for 60 s the cache is bypassed, even the warm L1
    assert cache.stats.bypasses == 2 and cache.stats.l1_hits == 1 and source.loads == 3


def test_values_refused_by_cacheable_are_not_stored(make_cache: Callable[..., TwoLevelCache]) -> None:
    source = Source()
    cache = make_cache()

    def fetch() -> None:
        cache.fetch("agents", "a1", Config, source.load, cacheable=lambda c: c.version >= 2)

    fetch()
    fetch()
    assert source.loads == 2
    source.version = 2
    fetch()
    fetch()
    assert source.loads == 3


def test_l1_is_bounded_and_evicted_entries_come_back_from_l2(make_cache: Callable[..., TwoLevelCache]) -> None:
    source = Source()
    cache = make_cache(l1_max_entries=2)
    for key in ("a1", "a2", "a3"):
        read(cache, source, key)
    read(cache, source, "a1")  # evicted from L1, still in L2
    assert source.loads == 3 and cache.stats.l2_hits == 1


class Big(PublicModel):
    blob: str


def test_a_value_over_the_l1_entry_limit_is_served_from_l2_and_never_held_in_process(
        make_cache: Callable[..., TwoLevelCache]) -> None:
    cache = make_cache(l1_max_entry_bytes=1024, l1_max_bytes=4096)
    loads: list[int] = []

    def load() -> Big:
        loads.append(1)
        return Big(blob="x" * 5000)

    for _ in range(3):
        assert cache.fetch("agents", "big", Big, load) is not None
    assert len(loads) == 1  # cached: in L2
    assert cache.stats.l1_hits == 0 and cache.stats.l2_hits == 2  # never from L1
    assert cache._l1.bytes == 0
    small = cache.fetch("agents", "small", Config, Source().load)
    assert small is not None and cache.fetch("agents", "small", Config, Source().load) == small
    assert cache.stats.l1_hits == 1 and 0 < cache._l1.bytes <= 1024
