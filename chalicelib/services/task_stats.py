"""Task statistics over a time window, computed by the database where it can.

Definitions (the metrics agent's output documents them too):
- `counts_by_status`: tasks *created* in the window, by their current status.
- `finished`: tasks that reached a terminal state in the window (completed_at in it), by status.
- `throughput_per_minute`: tasks completed in the window / window minutes.
- `error_rate`: (failed + timed_out) / (completed + failed + timed_out) of the finished ones;
  cancellations are the user's choice, not errors. Null when nothing finished.
- `latency_ms`: percentiles (continuous, i.e. linear interpolation — Postgres' percentile_cont)
  over tasks completed in the window, of end_to_end = completed_at - created_at and of
  processing = completed_at - started_at.

Counts are GROUP BY queries on every database. Percentiles use percentile_cont on
Postgres (no rows leave the database); SQLite has no such aggregate, so there the
durations are read and interpolated in Python with the same definition.
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, extract, func, select
from sqlalchemy.orm import Session

from chalicelib.db.models import Task
from chalicelib.domain.tasks import TERMINAL, TaskStatus

PERCENTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
ERRORS = (TaskStatus.FAILED, TaskStatus.TIMED_OUT)
#: breakdown name -> the columns that identify a group (an agent's type comes with its id).
DIMENSIONS: dict[str, tuple[str, ...]] = {"agent_type": ("agent_type",), "agent_id": ("agent_type", "agent_id")}

Key = tuple[str, ...]


def percentile_cont(values: Sequence[float], fraction: float) -> float | None:
    """Postgres' percentile_cont: linear interpolation between the closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _columns(names: Sequence[str]) -> list[ColumnElement[Any]]:
    return [getattr(Task, name) for name in names]


def _key(row: Sequence[Any], width: int) -> Key:
    return tuple(str(v) for v in row[:width])


class TaskStats:
    def __init__(self, session: Session, *, now: datetime, window_minutes: int, user_id: uuid.UUID | None) -> None:
        self.session = session
        self.end = now
        self.start = now - timedelta(minutes=window_minutes)
        self.minutes = window_minutes
        self.user_id = user_id

    def _scoped(self, *conditions: ColumnElement[bool]) -> list[ColumnElement[bool]]:
        return [*conditions, *([Task.user_id == self.user_id] if self.user_id is not None else [])]

    def compute(self, breakdowns: Sequence[str]) -> dict[str, Any]:
        result: dict[str, Any] = {"overall": self._groups(()).get((), self._empty()), "groups": {}}
        for name in breakdowns:
            names = DIMENSIONS[name]
            groups = self._groups(names)
            result["groups"][name] = [{**dict(zip(names, key, strict=True)), **stats}
                                      for key, stats in sorted(groups.items())]
        return result

    def _empty(self) -> dict[str, Any]:
        return self._stats({}, {}, {"end_to_end": {}, "processing": {}})

    def _groups(self, names: Sequence[str]) -> dict[Key, dict[str, Any]]:
        cols, width = _columns(names), len(names)
        created: dict[Key, dict[str, int]] = defaultdict(dict)
        for row in self.session.execute(
            select(*cols, Task.status, func.count()).where(*self._scoped(Task.created_at >= self.start,
                                                                        Task.created_at < self.end))
            .group_by(*cols, Task.status)
        ):
            created[_key(row, width)][row[width]] = int(row[width + 1])
        finished: dict[Key, dict[str, int]] = defaultdict(dict)
        for row in self.session.execute(
            select(*cols, Task.status, func.count()).where(*self._finished(list(TERMINAL))).group_by(*cols, Task.status)
        ):
            finished[_key(row, width)][row[width]] = int(row[width + 1])
        latency = self._latency(cols, width)
        keys = set(created) | set(finished)
        empty: dict[str, dict[str, float | None]] = {"end_to_end": {}, "processing": {}}
        return {k: self._stats(created.get(k, {}), finished.get(k, {}), latency.get(k, empty)) for k in keys}

    def _finished(self, statuses: list[str]) -> list[ColumnElement[bool]]:
        return self._scoped(Task.status.in_(statuses), Task.completed_at >= self.start, Task.completed_at < self.end)

    def _latency(self, cols: list[ColumnElement[Any]], width: int) -> dict[Key, dict[str, dict[str, float | None]]]:
        where = self._finished([TaskStatus.COMPLETED])
        if self.session.get_bind().dialect.name == "postgresql":
            e2e = extract("epoch", Task.completed_at - Task.created_at) * 1000
            proc = extract("epoch", Task.completed_at - Task.started_at) * 1000  # NULL started_at: ignored
            aggs = [func.percentile_cont(f).within_group(expr) for expr in (e2e, proc) for _, f in PERCENTILES]
            out: dict[Key, dict[str, dict[str, float | None]]] = {}
            for row in self.session.execute(select(*cols, *aggs).where(*where).group_by(*cols)):
                values = [None if v is None else float(v) for v in row[width:]]
                n = len(PERCENTILES)
                out[_key(row, width)] = {
                    "end_to_end": {label: values[i] for i, (label, _) in enumerate(PERCENTILES)},
                    "processing": {label: values[n + i] for i, (label, _) in enumerate(PERCENTILES)},
                }
            return out
        samples: dict[Key, dict[str, list[float]]] = defaultdict(lambda: {"end_to_end": [], "processing": []})
        for row in self.session.execute(select(*cols, Task.created_at, Task.started_at, Task.completed_at)
                                        .where(*where)):
            created_at, started_at, completed_at = row[width:]
            bucket = samples[_key(row, width)]
            bucket["end_to_end"].append((completed_at - created_at).total_seconds() * 1000)
            if started_at is not None:
                bucket["processing"].append((completed_at - started_at).total_seconds() * 1000)
        return {k: {kind: {label: percentile_cont(v, f) for label, f in PERCENTILES} for kind, v in b.items()}
                for k, b in samples.items()}

    def _stats(self, created: dict[str, int], finished: dict[str, int],
               latency: dict[str, dict[str, float | None]]) -> dict[str, Any]:
        completed = finished.get(TaskStatus.COMPLETED, 0)
        errors = sum(finished.get(s, 0) for s in ERRORS)
        judged = completed + errors
        return {
            "counts_by_status": {str(s): created.get(s, 0) for s in TaskStatus},
            "finished": {str(s): finished.get(s, 0) for s in TaskStatus if s in TERMINAL},
            "completed": completed,
            "throughput_per_minute": round(completed / self.minutes, 6),
            "error_rate": round(errors / judged, 6) if judged else None,
            "latency_ms": {kind: {label: _ms(latency.get(kind, {}).get(label)) for label, _ in PERCENTILES}
                           for kind in ("end_to_end", "processing")},
        }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
