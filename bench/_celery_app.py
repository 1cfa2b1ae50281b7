"""The Celery side of bench/consumer_vs_celery.py (not a benchmark itself: run_all skips `_` files).

A plain Celery 5 worker doing the work YMERA's consumer does for a validation task, against the same Postgres
tables (so the event-ledger triggers fire for it too): a conditional claim (`UPDATE ... RETURNING` in its own
transaction), the validation, then the result row and the completed status in a second transaction. Settings come
from the environment the benchmark gives the worker (BENCH_*); the broker is Redis with its own db number and key
prefix. Only ever imported inside .venv-bench.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from celery import Celery  # noqa: E402 - bench-only dependency, after the path set-up

app = Celery("ymera_bench_celery", broker=os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/12"))
app.conf.update(
    task_serializer="json", accept_content=["json"], task_ignore_result=True,
    task_acks_late=True,  # acknowledged after the work, like an SQS delete after the batch
    worker_prefetch_multiplier=int(os.environ.get("BENCH_CELERY_PREFETCH", "10")),
    broker_transport_options={"global_keyprefix": os.environ.get("BENCH_CELERY_PREFIX", "ymera-bench-celery:")},
    broker_connection_retry_on_startup=True, worker_hijack_root_logger=False,
)
if os.environ.get("BENCH_CELERY_BACKEND"):  # bench/e2e_vs_celery.py: the client waits on the result (.get())
    app.conf.update(result_backend=os.environ["BENCH_CELERY_BACKEND"], result_expires=600,
                    result_backend_transport_options={"global_keyprefix": os.environ.get("BENCH_CELERY_PREFIX",
                                                                                         "ymera-bench-celery:")})

_CLAIM = ("UPDATE tasks SET status = 'processing', attempts = attempts + 1, started_at = clock_timestamp(), "
          "updated_at = clock_timestamp() WHERE id = %(id)s AND status IN ('pending', 'queued') "
          "RETURNING input_data")
_RESULT = ("INSERT INTO task_results (id, task_id, status, output_data, metrics, created_at) "
           "VALUES (%(rid)s, %(id)s, 'completed', %(out)s::jsonb, %(metrics)s::jsonb, clock_timestamp())")
_DONE = ("UPDATE tasks SET status = 'completed', completed_at = clock_timestamp(), updated_at = clock_timestamp(), "
         "lease_expires_at = NULL WHERE id = %(id)s AND status = 'processing'")

_engine: Any = None


def engine() -> Any:
    """One engine per worker process, built after the fork (the pool's sockets are never shared)."""
    global _engine
    if _engine is None:
        from sqlalchemy import create_engine

        _engine = create_engine(os.environ["BENCH_DATABASE_URL"], pool_size=1, pool_pre_ping=True)
    return _engine


def validate(input_data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The validation agent's own function on the task's input (same model, same jsonschema calls)."""
    from chalicelib.agents import validation

    if os.environ.get("BENCH_CELERY_SCHEMA_CACHE") != "1" and hasattr(validation, "SCHEMA_CACHE"):
        validation.SCHEMA_CACHE.maxsize = 0  # a plain worker: check_schema and a validator per task
    agent = validation.ValidationAgent()
    result = agent.run(agent.Input.model_validate(input_data), {}, None)
    return result.output, result.metrics


@app.task(name="bench.validate")
def run_task(task_id: str) -> None:
    process(task_id)


@app.task(name="bench.validate_result", ignore_result=False)
def run_task_with_result(task_id: str) -> str:
    """The same work, its outcome stored in the result backend for a client's `apply_async(...).get()`."""
    return process(task_id)


def process(task_id: str) -> str:
    eng = engine()
    with eng.begin() as conn:
        row = conn.exec_driver_sql(_CLAIM, {"id": uuid.UUID(task_id)}).first()
    if row is None:
        return "duplicate"  # a duplicate delivery: the task is not claimable any more
    output, metrics = validate(row[0])
    with eng.begin() as conn:
        conn.exec_driver_sql(_RESULT, {"rid": uuid.uuid4(), "id": uuid.UUID(task_id), "out": json.dumps(output),
                                       "metrics": json.dumps(metrics)})
        conn.exec_driver_sql(_DONE, {"id": uuid.UUID(task_id)})
    return "completed"
