"""L1: bounded LRU with per-entry expiry, shared between threads. No network."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from chalicelib.cache.lru import LocalLRU
from chalicelib.cache.twolevel import TwoLevelCache
from chalicelib.schemas.common import PublicModel


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_least_recently_used_entry_is_evicted_first() -> None:
    lru = LocalLRU(max_entries=2)
    lru.put("a", b"t", 1, ttl=60)
    lru.put("b", b"t", 2, ttl=60)
    assert lru.get("a") is not None  # "a" is now the most recently used
    lru.put("c", b"t", 3, ttl=60)
    assert lru.get("b") is None
    assert [lru.get(k).value for k in ("a", "c")] == [1, 3]  # type: ignore[union-attr]
    assert len(lru) == 2


def test_entries_expire_after_their_ttl() -> None:
    clock = Clock()
    lru = LocalLRU(max_entries=10, clock=clock)
    lru.put("k", b"v1", "value", ttl=30)
    clock.now += 29.9
    entry = lru.get("k")
    assert entry is not None and entry.tag == b"v1"
    clock.now += 0.2
    assert lru.get("k") is None
    assert len(lru) == 0  # expired entries do not hold a slot


def test_discard_where_drops_one_namespace_only() -> None:
    lru = LocalLRU()
    lru.put(("agents", "1"), b"t", 1, ttl=60)
    lru.put(("agents", "2"), b"t", 2, ttl=60)
    lru.put(("task_results", "1"), b"t", 3, ttl=60)
    assert lru.discard_where(lambda k: isinstance(k, tuple) and k[0] == "agents") == 2
    assert lru.get(("agents", "1")) is None and lru.get(("task_results", "1")) is not None


def test_concurrent_puts_never_exceed_the_bound() -> None:
    lru = LocalLRU(max_entries=50)

    def hammer(worker: int) -> None:
        for i in range(2000):
            lru.put((worker, i % 80), b"t", i, ttl=60)
            lru.get((worker, (i * 7) % 80))
            if i % 97 == 0:
                lru.discard((worker, i % 80))

    with ThreadPoolExecutor(max_workers=8) as pool:
        for future in [pool.submit(hammer, w) for w in range(8)]:
            future.result()  # re-raises anything a thread hit
    assert len(lru) == 50


def test_zero_capacity_is_refused() -> None:
    with pytest.raises(ValueError):
        LocalLRU(max_entries=0)


class Value(PublicModel):
    n: int


def test_without_redis_every_read_goes_to_the_loader() -> None:
    """No Redis configured: an L1 alone could not be invalidated across processes, so nothing is cached."""
    cache = TwoLevelCache(None, prefix="x:", ttls={"agents": 60})
    calls: list[int] = []

    def load() -> Value:
        calls.append(1)
        return Value(n=len(calls))

    assert [cache.fetch("agents", "k", Value, load).n for _ in range(3)] == [1, 2, 3]  # type: ignore[union-attr]
    assert cache.stats.bypasses == 3 and cache.stats.l1_hits == 0
    cache.invalidate("agents", "k")  # nothing to reach: no error
    assert cache.clear() == ["agents"]


def test_unknown_namespace_is_a_programming_error() -> None:
    cache = TwoLevelCache(None, prefix="x:", ttls={"agents": 60})
    with pytest.raises(ValueError, match="unknown cache namespace"):
        cache.fetch("nope", "k", Value, lambda: None)
    with pytest.raises(ValueError):
        cache.clear(["nope"])


def test_an_entry_over_the_entry_limit_is_not_kept_and_its_stale_copy_goes() -> None:
    lru = LocalLRU(max_entries=10, max_bytes=1000, max_entry_bytes=100)
    lru.put("k", b"v1", "small", ttl=60, size=50)
    lru.put("k", b"v2", "huge", ttl=60, size=101)
    assert lru.get("k") is None and lru.skipped == 1 and lru.bytes == 0


def test_the_total_size_is_bounded_least_recently_used_first() -> None:
    lru = LocalLRU(max_entries=100, max_bytes=100, max_entry_bytes=100)
    for key in "abc":
        lru.put(key, b"t", key, ttl=60, size=30)
    assert lru.get("a") is not None  # "b" is now the least recently used
    lru.put("d", b"t", "d", ttl=60, size=30)
    assert lru.get("b") is None and [k for k in "acd" if lru.get(k) is not None] == ["a", "c", "d"]
    assert lru.bytes == 90 <= lru.max_bytes
    lru.put("e", b"t", "e", ttl=60, size=100)  # one that fills it alone pushes everything else out
    assert len(lru) == 1 and lru.bytes == 100
    lru.discard("e")
    assert lru.bytes == 0
