"""The Prometheus text writer and histogram read-back. Pure: no Redis, no database."""

from __future__ import annotations

from chalicelib.services.monitoring import _Exposition
from chalicelib.services.request_metrics import LATENCY_BUCKETS, RequestMetrics, RouteSeries


def test_label_values_are_escaped_and_numbers_formatted() -> None:
    out = _Exposition()
    out.family("ymera_x", "gauge", "An example.")
    out.sample("ymera_x", {"route": 'a"b\\c\nd'}, 3)
    out.sample("ymera_x", {"route": "/y"}, 0.25)
    assert out.text() == ('# HELP ymera_x An example.\n# TYPE ymera_x gauge\n'
                          'ymera_x{route="a\\"b\\\\c\\nd"} 3\nymera_x{route="/y"} 0.25\n')


def test_stored_buckets_read_back_cumulative() -> None:
    series = RouteSeries("GET", "/agents", "200", count=4, per_bucket={0.005: 1, 0.1: 2, 10.0: 1})
    cumulative = dict(series.cumulative())
    assert list(cumulative) == list(LATENCY_BUCKETS)
    assert (cumulative[0.005], cumulative[0.05], cumulative[0.1], cumulative[5.0], cumulative[10.0]) == (1, 1, 3, 3, 4)


def test_each_request_lands_in_the_first_bucket_whose_bound_it_does_not_exceed() -> None:
    import fakeredis

    metrics = RequestMetrics(fakeredis.FakeRedis(), "t:")
    for seconds in (0.005, 0.2, 20.0):  # on a bound, between bounds, beyond the last bound (+Inf only)
        metrics.record("GET", "/tasks/{task_id}", 200, seconds)
    [series] = metrics.snapshot()
    assert (series.route, series.method, series.status, series.count) == ("/tasks/{task_id}", "GET", "200", 3)
    assert series.per_bucket == {0.005: 1, 0.25: 1}
    assert abs(series.sum_seconds - 20.205) < 1e-6


def test_a_short_scrape_token_is_refused_outside_development() -> None:
    import pytest
    from pydantic import ValidationError

    from chalicelib.config import Settings

    base = {"database_url": "postgresql://db/ymera?sslmode=require", "jwt_secret": "j" * 40}
    with pytest.raises(ValidationError, match="YMERA_METRICS_TOKEN"):
        Settings(stage="prod", metrics_token="guessable", **base)
    assert Settings(stage="prod", metrics_token="t" * 32, **base).metrics_token == "t" * 32
    assert Settings(stage="prod", **base).metrics_token == ""  # unset: only admins may scrape
