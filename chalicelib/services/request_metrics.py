"""HTTP request counts and latency histograms, kept in Redis so /metrics shows
every Lambda container's requests, not only the container that answers the scrape.

One hash holds every series: per request, its count, its latency sum
(microseconds, so integers suffice) and the one histogram bucket it falls in;
buckets are made cumulative when read. Fields are
`<kind>|<method>|<route>|<status>`; route is the Chalice pattern
(`/tasks/{task_id}`), so the number of series stays bounded.

Writes are buffered per container: a request only adds to in-memory counters
(summed per field), and the buffer goes to Redis in one pipeline of HINCRBYs
when its oldest sample is `flush_seconds` old or it holds `max_buffered`
samples, checked as each request is recorded, so the request that finds it
due pays one round trip (at most ~once a second) instead of every request
paying one. A scrape flushes its own container's buffer first.

What that costs: another container's requests show up in a scrape up to
`flush_seconds` late while it keeps serving. A container that serves nothing
more (Lambda freezes it between invocations) flushes at its next request; one
reclaimed before that loses its unflushed samples (at most `flush_seconds` of
them). `flush_seconds=0` writes every request at once, as before.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chalicelib.observability import logger
from chalicelib.ratelimit import Breaker

#: Upper bounds (seconds) of the latency histogram, Prometheus' default buckets.
LATENCY_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_COUNT, _SUM_US, _BUCKET = "n", "us", "b"


@dataclass
class RouteSeries:
    method: str
    route: str
    status: str
    count: int = 0
    sum_seconds: float = 0.0
    #: requests per bucket bound, NOT cumulative (as stored); see `cumulative`.
    per_bucket: dict[float, int] = field(default_factory=dict)

    def cumulative(self) -> list[tuple[float, int]]:
        running, out = 0, []
        for bound in LATENCY_BUCKETS:
            running += self.per_bucket.get(bound, 0)
            out.append((bound, running))
        return out


class RequestMetrics:
    def __init__(self, client: Any, key_prefix: str, breaker_seconds: float = 5.0, *, flush_seconds: float = 1.0,
                 max_buffered: int = 1000, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self.key = f"{key_prefix}metrics:http"
        self.breaker = Breaker(breaker_seconds)
        self.flush_seconds = flush_seconds
        self.max_buffered = max_buffered
        self._clock = clock
        self._lock = threading.Lock()  # the chalice local server and tests record from many threads
        #: (method, route, status, latency bucket index) -> [requests, microseconds] not yet in Redis.
        self._buffer: dict[tuple[str, str, int, int], list[int]] = {}
        self._buffered = 0  # samples (requests) in the buffer
        self._oldest = 0.0  # clock() of the first sample in the buffer

    @property
    def buffered(self) -> int:
        """Requests recorded by this container and not yet written to Redis."""
        return self._buffered

    def record(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one request. Never raises: losing a sample must not fail the request."""
        if self.breaker.is_open:
            return
        # The hash fields are spelled out at flush: per request, one tuple and two additions.
        series = (method, route, status, bisect_left(LATENCY_BUCKETS, seconds))  # first bound >= seconds
        micros = max(0, round(seconds * 1_000_000))
        now = self._clock()
        with self._lock:
            sums = self._buffer.get(series)
            if sums is None:
                self._buffer[series] = [1, micros]
            else:
                sums[0] += 1
                sums[1] += micros
            if not self._buffered:
                self._oldest = now
            self._buffered += 1
            due = self._buffered >= self.max_buffered or now - self._oldest >= self.flush_seconds
        if due:
            self.flush()

    def flush(self) -> None:
        """Write the buffered counts in one pipeline. Never raises: on a Redis error they are dropped
        (retrying could count them twice: a pipeline that timed out may have been applied)."""
        from redis.exceptions import RedisError

        with self._lock:
            buffer, self._buffer, self._buffered = self._buffer, {}, 0
        if not buffer or self.breaker.is_open:
            return
        increments: Counter[str] = Counter()  # hash field -> increment (`le` is inclusive: bucket per index)
        for (method, route, status, index), (count, micros) in buffer.items():
            labels = f"{method}|{route}|{status}"
            increments[f"{_COUNT}|{labels}"] += count
            increments[f"{_SUM_US}|{labels}"] += micros
            if index < len(LATENCY_BUCKETS):
                increments[f"{_BUCKET}{LATENCY_BUCKETS[index]!r}|{labels}"] += count
        pipe = self._client.pipeline(transaction=False)
        for name, increment in increments.items():
            pipe.hincrby(self.key, name, increment)
        try:
            pipe.execute()
        except RedisError as exc:
            self.breaker.trip()
            logger.warning("request metrics not recorded: redis unavailable", extra={"error": repr(exc)})

    def snapshot(self) -> list[RouteSeries]:
        """Every series, sorted by route, method, status. Raises RedisError when Redis is down.

        This container's buffer is written first, so a scrape always counts the requests it served itself.
        """
        self.flush()
        series: dict[tuple[str, str, str], RouteSeries] = {}
        for raw_field, raw_value in self._client.hgetall(self.key).items():
            kind, _, labels = _text(raw_field).partition("|")
            method, route, status = labels.split("|") if labels.count("|") == 2 else ("", "", "")
            if not route:
                continue
            entry = series.setdefault((route, method, status), RouteSeries(method, route, status))
            value = int(raw_value)
            if kind == _COUNT:
                entry.count = value
            elif kind == _SUM_US:
                entry.sum_seconds = value / 1_000_000
            elif kind.startswith(_BUCKET):
                entry.per_bucket[float(kind[len(_BUCKET):])] = value
        return [series[k] for k in sorted(series)]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
