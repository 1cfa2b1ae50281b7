"""What the event-ledger triggers cost (chalicelib/events/triggers.py; docs/events.md, "Cost").

Two measurements, each with the triggers enabled and disabled (ALTER TABLE ... DISABLE TRIGGER) in the same
process and database, rounds interleaved so a noisy neighbour hits both sides alike:

1. The consumer path: functions.agent_consumer.handler on a 10-record batch of validation tasks (one claim
   statement moving 10 tasks, then one outcome transaction per task: 11 trigger calls, 20 events), and on
   ten 1-record batches (20 trigger calls, 20 events), like bench/batch_processing.py.
2. One status UPDATE statement on its own transaction (1 row, and 100 rows of one user), the SQL floor.

Fails (exit 1) when one event adds more than BUDGET_MS_PER_EVENT to the 10-record batch.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _harness import throwaway_database  # noqa: E402 - bench/ is on the path when run as a script
from batch_processing import Ctx, consumer_setup, event  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "15"))
#: what one event may add to the consumer path (measured ~0.2 ms on 2 shared cores).
BUDGET_MS_PER_EVENT = 1.0


def main() -> int:
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        report, ok = measure()
    print(report)
    print(f"budget <= {BUDGET_MS_PER_EVENT} ms per event: {'ok' if ok else 'OVER BUDGET'}")
    return 0 if ok else 1


def triggers(db: Any, enabled: bool) -> None:
    from sqlalchemy import text

    from chalicelib.events.triggers import TRIGGERS

    with db.engine.begin() as conn:
        for t in TRIGGERS:
            conn.execute(text(f"ALTER TABLE {t.table} {'ENABLE' if enabled else 'DISABLE'} TRIGGER {t.name}"))


def measure() -> tuple[str, bool]:
    with throwaway_database() as url:
        db, seed = consumer_setup(url)
        from sqlalchemy import func, select, update

        from chalicelib.db.event_models import Event
        from chalicelib.db.models import Task
        from functions.agent_consumer import handler

        def batch() -> float:
            ids = seed(10)
            t = time.perf_counter()
            assert handler(event(ids), Ctx()) == {"batchItemFailures": []}
            return time.perf_counter() - t

        def singles() -> float:
            ids = seed(10)
            t = time.perf_counter()
            for task_id in ids:
                assert handler(event([task_id]), Ctx()) == {"batchItemFailures": []}
            return time.perf_counter() - t

        def flip(ids: list[uuid.UUID]) -> float:
            t = time.perf_counter()
            with db.transaction() as s:
                s.execute(update(Task).where(Task.id.in_(ids)).values(status="processing"))
            with db.transaction() as s:
                s.execute(update(Task).where(Task.id.in_(ids)).values(status="queued"))
            return (time.perf_counter() - t) / 2

        handler(event(seed(10)), Ctx())  # warm: imports, connection pool, jsonschema, plpgsql plans
        one, hundred = seed(1), seed(100)
        results: dict[tuple[str, bool], list[float]] = {}
        for r in range(ROUNDS):
            for enabled in ((True, False) if r % 2 == 0 else (False, True)):
                triggers(db, enabled)
                for name, fn in (("batch", batch), ("singles", singles), ("flip1", lambda: flip(one)),
                                 ("flip100", lambda: flip(hundred))):
                    results.setdefault((name, enabled), []).append(fn())
        triggers(db, True)
        with db.read() as s:
            written = s.scalar(select(func.count()).select_from(Event))
        db.engine.dispose()

    def line(name: str, label: str) -> str:
        on, off = (statistics.median(results[(name, e)]) * 1000 for e in (True, False))
        return (f"{label}: {off:.2f} ms without triggers, {on:.2f} ms with "
                f"({on - off:+.2f} ms, {(on / off - 1) * 100:+.0f}%)")

    batch_on, batch_off = (statistics.median(results[("batch", e)]) for e in (True, False))
    per_event_ms = (batch_on - batch_off) * 1000 / 20
    return "\n".join([
        f"event-ledger trigger cost, median of {ROUNDS} interleaved rounds ({written} events written):",
        line("batch", "consumer, one 10-record batch (11 trigger calls, 20 events)"),
        line("singles", "consumer, ten 1-record batches (20 trigger calls, 20 events)"),
        line("flip1", "one UPDATE of 1 task's status + commit"),
        line("flip100", "one UPDATE of 100 tasks' status + commit (1 trigger call, 100 events)"),
        f"-> {per_event_ms:.2f} ms per event on the consumer path (budget {BUDGET_MS_PER_EVENT} ms)",
    ]), per_event_ms < BUDGET_MS_PER_EVENT


if __name__ == "__main__":
    sys.exit(main())
