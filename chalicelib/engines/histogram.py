"""Log-spaced latency histograms: what lets a week of rollups answer percentiles without the week's tasks.

Bucket 0 holds durations up to `BASE` (1 ms); bucket i >= 1 holds (BASE * GAMMA**(i-1), BASE * GAMMA**i].
A bucket is represented by 2 * BASE * GAMMA**i / (GAMMA + 1), which is within `RELATIVE_ERROR`
((GAMMA - 1) / (GAMMA + 1), 2.4 %) of every duration in it (the DDSketch mapping). Percentiles are then
interpolated between the values at the two ranks around `f * (n - 1)`, as `percentile_cont` does on raw values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from sqlalchemy import ColumnElement, SmallInteger, case, cast, func, literal

BASE = 0.001
GAMMA = 1.05
RELATIVE_ERROR = (GAMMA - 1) / (GAMMA + 1)
#: 1 ms * 1.05**800 is beyond any task's lifetime: everything longer lands in the last bucket.
MAX_BUCKET = 800


def bucket_of(seconds: float) -> int:
    if seconds <= BASE:
        return 0
    return min(MAX_BUCKET, math.ceil(math.log(seconds / BASE) / math.log(GAMMA)))


def bucket_sql(seconds: ColumnElement[float]) -> ColumnElement[int]:
    """`bucket_of` in SQL (NULL stays NULL), as the compactor's text SQL buckets
    (tests/integration/test_engine_rollups.py compares rollup percentiles with exact ones)."""
    raw = func.ceil(func.ln(seconds / BASE) / math.log(GAMMA))
    return case((seconds.is_(None), None), (seconds <= BASE, literal(0)),
                else_=cast(func.least(raw, MAX_BUCKET), SmallInteger))


def value_of(bucket: int) -> float:
    if bucket <= 0:
        return BASE / 2
    return 2 * BASE * GAMMA ** bucket / (GAMMA + 1)


def percentiles(counts: Mapping[int, int], fractions: Mapping[str, float]) -> dict[str, float | None]:
    """Interpolated percentiles over a histogram (bucket -> count); None for an empty one."""
    total = sum(counts.values())
    if total == 0:
        return {name: None for name in fractions}
    ordered = sorted((b, n) for b, n in counts.items() if n > 0)

    def at(rank: int) -> float:  # the value of the rank-th smallest duration (0-based)
        seen = 0
        for b, n in ordered:
            seen += n
            if rank < seen:
                return value_of(b)
        return value_of(ordered[-1][0])

    out: dict[str, float | None] = {}
    for name, f in fractions.items():
        position = f * (total - 1)
        low, high = math.floor(position), math.ceil(position)
        lo_v, hi_v = at(low), at(high)
        out[name] = round(lo_v + (hi_v - lo_v) * (position - low), 3)
    return out
