"""The rollup plan covers a range exactly once, and the histogram's estimates stay within its bound."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from chalicelib.engines import histogram, rollups

T = datetime(2026, 11, 28, 0, 0, tzinfo=timezone.utc)


def _covered(p: rollups.Plan) -> list[tuple[datetime, datetime]]:
    return sorted([*p.raw, *p.hours, *p.days])


@pytest.mark.parametrize("seed", range(40))
def test_every_instant_is_in_exactly_one_span(seed: int) -> None:
    rng = random.Random(seed)
    start = T + timedelta(minutes=rng.randrange(0, 60 * 24 * 3))
    end = start + timedelta(minutes=rng.randrange(1, 60 * 24 * 6))
    mark = None if seed % 7 == 0 else T + timedelta(hours=rng.randrange(0, 24 * 8))
    for bucket in ("hour", "day"):
        p = rollups.plan(start, end, mark, bucket)
        spans = _covered(p)
        assert spans[0][0] == start and spans[-1][1] == end
        for (_, a_end), (b_start, _) in zip(spans, spans[1:], strict=False):
            assert a_end == b_start  # contiguous, no overlap
        for lo, hi in [*p.hours, *p.days]:
            assert mark is not None and hi <= mark and lo.minute == 0 and lo.second == 0
        for lo, hi in p.days:
            assert bucket == "day" and lo.hour == 0 and hi.hour == 0
        assert len(p.raw) <= 2


def test_a_range_inside_one_hour_or_before_any_compaction_is_raw() -> None:
    assert rollups.plan(T, T + timedelta(minutes=30), T + timedelta(days=3), "day") == rollups.Plan(
        raw=[(T, T + timedelta(minutes=30))])
    assert not rollups.plan(T, T + timedelta(days=2), None, "day").uses_rollups


def test_histogram_percentiles_are_within_the_bound_of_the_exact_ones() -> None:
    rng = random.Random(3)
    values = sorted(rng.lognormvariate(0, 2) for _ in range(20_000))
    counts: dict[int, int] = {}
    for v in values:
        counts[histogram.bucket_of(v)] = counts.get(histogram.bucket_of(v), 0) + 1
    got = histogram.percentiles(counts, {"p50": 0.5, "p90": 0.9, "p99": 0.99})
    for name, f in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        pos = f * (len(values) - 1)
        lo = int(pos)
        exact = values[lo] + (values[min(lo + 1, len(values) - 1)] - values[lo]) * (pos - lo)
        assert got[name] == pytest.approx(exact, rel=histogram.RELATIVE_ERROR + 0.002)


def test_each_bucket_value_is_within_the_bound_of_its_members() -> None:
    for seconds in (0.0015, 0.2, 1.0, 37.5, 3600.0):
        assert histogram.value_of(histogram.bucket_of(seconds)) == pytest.approx(seconds,
                                                                                 rel=histogram.RELATIVE_ERROR)
    assert histogram.percentiles({}, {"p50": 0.5}) == {"p50": None}
