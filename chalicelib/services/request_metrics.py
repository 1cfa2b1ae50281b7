"""HTTP request counts and latency histograms, kept in Redis so /metrics shows
every Lambda container's requests, not only the container that answers the scrape.

One hash holds every series. A request costs one pipelined round trip of
HINCRBYs: its count, its latency sum (microseconds, so integers suffice) and
the one histogram bucket it falls in; buckets are made cumulative when read.
Fields are `<kind>|<method>|<route>|<status>`; route is the Chalice pattern
(`/tasks/{task_id}`), so the number of series stays bounded.
"""

from __future__ import annotations

from bisect import bisect_left
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
    def __init__(self, client: Any, key_prefix: str, breaker_seconds: float = 5.0) -> None:
        self._client = client
        self.key = f"{key_prefix}metrics:http"
        self.breaker = Breaker(breaker_seconds)

    def record(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one request. Never raises: losing a sample must not fail the request."""
        from redis.exceptions import RedisError

        if self.breaker.is_open:
            return
        labels = f"{method}|{route}|{status}"
        pipe = self._client.pipeline(transaction=False)
        pipe.hincrby(self.key, f"{_COUNT}|{labels}", 1)
        pipe.hincrby(self.key, f"{_SUM_US}|{labels}", max(0, round(seconds * 1_000_000)))
        index = bisect_left(LATENCY_BUCKETS, seconds)  # first bound >= seconds: `le` is inclusive
        if index < len(LATENCY_BUCKETS):
            pipe.hincrby(self.key, f"{_BUCKET}{LATENCY_BUCKETS[index]!r}|{labels}", 1)
        try:
            pipe.execute()
        except RedisError as exc:
            self.breaker.trip()
            logger.warning("request metrics not recorded: redis unavailable", extra={"error": repr(exc)})

    def snapshot(self) -> list[RouteSeries]:
        """Every series, sorted by route, method, status. Raises RedisError when Redis is down."""
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
