"""Request metrics are buffered per container and written to Redis by a flush rule: when the oldest
buffered sample is `flush_seconds` old or `max_buffered` samples are waiting, and before a scrape."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest

from chalicelib.services.request_metrics import RequestMetrics
from tests.conftest import REDIS_PREFIX
from tests.integration.redis_trips import CountingRedis

ROUTE = "/tasks/{task_id}"


@pytest.fixture
def prefix() -> str:
    return f"{REDIS_PREFIX}rm{uuid.uuid4().hex[:6]}:"


@pytest.fixture
def client(redis_url: str) -> Iterator[CountingRedis]:
    c = CountingRedis.connect(redis_url)
    yield c
    c.close()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def metrics(client: CountingRedis, prefix: str, clock: Clock, **kwargs: float) -> RequestMetrics:
    return RequestMetrics(client, prefix, clock=clock, **kwargs)  # type: ignore[arg-type]


def counted(reader: RequestMetrics, method: str = "GET", route: str = ROUTE, status: str = "200") -> int:
    return next((s.count for s in reader.snapshot() if (s.method, s.route, s.status) == (method, route, status)), 0)


def test_requests_are_written_once_the_oldest_is_a_flush_interval_old(client: CountingRedis, prefix: str,
                                                                      redis_url: str) -> None:
    clock = Clock()
    writer = metrics(client, prefix, clock, flush_seconds=1.0)
    reader = RequestMetrics(CountingRedis.connect(redis_url), prefix)  # another container
    for _ in range(5):
        writer.record("GET", ROUTE, 200, 0.002)
        clock.now += 0.1
    assert client.trips == [] and writer.buffered == 5  # nothing sent yet: no request paid a round trip
    assert counted(reader) == 0

    clock.now = 101.0  # the oldest sample (t=100.0) is now a second old
    writer.record("GET", ROUTE, 404, 0.003)
    assert len(client.trips) == 1 and set(client.trips[0]) == {"HINCRBY"}  # one pipeline for all six
    assert writer.buffered == 0
    assert counted(reader) == 5 and counted(reader, status="404") == 1
    latency = next(s for s in reader.snapshot() if s.status == "200")
    assert latency.sum_seconds == pytest.approx(0.010) and dict(latency.cumulative())[0.005] == 5


def test_a_full_buffer_is_written_at_once(client: CountingRedis, prefix: str) -> None:
    clock = Clock()
    writer = metrics(client, prefix, clock, flush_seconds=60.0, max_buffered=10)
    for _ in range(9):
        writer.record("GET", ROUTE, 200, 0.001)
    assert client.trips == []
    writer.record("GET", ROUTE, 200, 0.001)
    assert len(client.trips) == 1 and writer.buffered == 0
    assert counted(RequestMetrics(client, prefix)) == 10


def test_a_scrape_counts_its_own_containers_buffer(client: CountingRedis, prefix: str) -> None:
    clock = Clock()
    container = metrics(client, prefix, clock, flush_seconds=60.0)
    for _ in range(3):
        container.record("POST", "/tasks", 202, 0.004)
    assert counted(container, "POST", "/tasks", "202") == 3  # snapshot flushed first
    assert container.buffered == 0


def test_flush_seconds_zero_writes_every_request(client: CountingRedis, prefix: str) -> None:
    clock = Clock()
    writer = metrics(client, prefix, clock, flush_seconds=0.0)
    for _ in range(3):
        writer.record("GET", ROUTE, 200, 0.001)
    assert len(client.trips) == 3 and writer.buffered == 0


def test_concurrent_requests_are_counted_exactly_once(client: CountingRedis, prefix: str) -> None:
    """Threads recording while others flush: no sample lost, none counted twice."""
    clock = Clock()
    writer = metrics(client, prefix, clock, flush_seconds=60.0, max_buffered=37)
    start = threading.Barrier(8)

    def serve() -> None:
        start.wait()
        for _ in range(250):
            writer.record("GET", ROUTE, 200, 0.001)

    threads = [threading.Thread(target=serve) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counted(RequestMetrics(client, prefix)) == 2000 - writer.buffered
    writer.flush()
    assert counted(RequestMetrics(client, prefix)) == 2000
