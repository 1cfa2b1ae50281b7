"""Recording a task's outcome: the one code path for managed consumers, external workers and the lease reaper."""

from __future__ import annotations

import functools
import json
import math
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, String, Uuid, bindparam, insert, select, text, update
from sqlalchemy.orm import Session

from chalicelib.db.models import Task, TaskResult
from chalicelib.db.types import JSONType, UTCDateTime, utcnow
from chalicelib.domain.tasks import TaskStatus

REPLACEMENT = "\ufffd"
#: a run that finishes after its task was cancelled or timed out is discarded (not stored as its result).
DISCARDING = (TaskStatus.CANCELLED, TaskStatus.TIMED_OUT)


def storable(value: Any) -> Any:
    """The value with what Postgres cannot store replaced: NUL and lone surrogates in text (and keys) become
    U+FFFD, NaN and infinities become null. Text from a model reply or an error body is arbitrary."""
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, dict):
        return {_text(str(k)): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _text(text: str) -> str:
    if "\x00" in text:
        text = text.replace("\x00", REPLACEMENT)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a surrogate: pairs are joined, lone ones replaced
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def store_outcome(session: Session, task_id: uuid.UUID, status: str, output: dict[str, Any],
                  metrics: dict[str, Any], error: dict[str, Any] | None, now: datetime | None = None,
                  started_at: datetime | None = None,
                  from_statuses: tuple[str, ...] = (TaskStatus.PROCESSING,)) -> bool:
    """Write the result row and finish the task, in the caller's transaction.

    The status moves only from `from_statuses` (`processing`), so a stale writer never moves a task backwards.
    A task cancelled or timed out while it ran does not get that run's result: its result row records the
    task's own status with no output (the run is discarded, never stored as a success). `started_at`, when
    given, is when the run really started (a batch claims its tasks before running them one by one). Text
    Postgres cannot store is replaced first (`storable`), so a model's reply can never leave a task
    unfinishable. An orchestrator task that ends unsuccessfully cancels its plan's run, and a workflow step's task
    (an orchestrator plan's steps included) records its run step and answers its task token (an outbox row),
    in the same transaction. Returns
    whether the status moved.
    """
    now = now or utcnow()
    output, metrics, error = storable(output), storable(metrics), storable(error)
    moved = session.execute(
        update(Task)
        .where(Task.id == task_id, Task.status.in_(from_statuses))
        .values(status=status, error=error, completed_at=now, updated_at=now, lease_expires_at=None,
                **({"started_at": started_at} if started_at is not None else {}))
        .returning(Task.agent_type, Task.callback_token)
        .execution_options(synchronize_session=False)
    ).first()
    if moved is None:
        current = session.scalar(select(Task.status).where(Task.id == task_id))
        if current in DISCARDING:
            output, metrics = {}, {"duration_ms": metrics.get("duration_ms", 0.0), "discarded": status}
            status = current
        session.add(TaskResult(task_id=task_id, status=status, output_data=output, metrics=metrics))
        return False
    session.add(TaskResult(task_id=task_id, status=status, output_data=output, metrics=metrics))
    if moved.agent_type == "orchestrator" and status != TaskStatus.COMPLETED:
        # An orchestrator that ended first (timed out, failed): its plan's run is cancelled with it.
        from chalicelib.workflows.plan_outcome import on_task_ended

        on_task_ended(session, task_id, {"code": "PARENT_FINISHED", "message": f"the orchestrator task {status}",
                                         "details": {"parent_task_id": str(task_id), "parent_error": error}})
    if moved.callback_token is not None:
        # A workflow step's task: the run step records it and its token's answer goes to the outbox.
        from chalicelib.workflows.steps import on_task_finished as on_step_finished

        on_step_finished(session, task_id)
    return True


def plain_outcome(task_id: uuid.UUID, status: str, output: dict[str, Any], metrics: dict[str, Any],
                  error: dict[str, Any] | None, *, started_at: datetime, now: datetime | None = None
                  ) -> dict[str, Any]:
    """The parameters of `finish_plain` / `store_plain_outcome` (text Postgres cannot store replaced)."""
    return {"p_task": task_id, "p_status": status, "p_error": storable(error), "p_now": now or utcnow(),
            "p_started": started_at, "p_output": storable(output), "p_metrics": storable(metrics),
            "p_result": uuid.uuid4()}


def finish_plain(conn: Connection, outcome: dict[str, Any]) -> bool:
    """Postgres: finish a `processing` task and write its result in one statement
    (`WITH moved AS (UPDATE tasks ...) INSERT INTO task_results ... SELECT ... FROM moved`), atomic on its own
    (it may run as its own transaction, `Database.statement()`). False when the task was not `processing`:
    nothing was written, and `store_plain_outcome` decides what its result row says."""
    return conn.execute(_FINISH_AND_RESULT, outcome).first() is not None


def finish_plain_group(conn: Connection, user_id: uuid.UUID, agent_type: str, outcomes: list[dict[str, Any]]
                       ) -> set[uuid.UUID]:
    """Postgres: `finish_plain` for several tasks of ONE owner and agent type in one statement (atomic on its own,
    `Database.statement()`): each `processing` task among them is finished and gets its result row, and the
    event ledger's statement triggers run once for all of them. The outcomes (`plain_outcome`'s parameters,
    one per task, no task twice) travel as one JSON array; their values are written as `finish_plain` writes
    them (a null error is JSON null there too). Returns the ids of the tasks it moved; the others (not
    `processing` any more, or not this owner's) got nothing and go through `store_plain_outcome`."""
    ids = [o["p_task"] for o in outcomes]
    if len(set(ids)) != len(ids):
        raise ValueError("a task appears twice in one grouped outcome")
    rows = json.dumps([{"task_id": str(o["p_task"]), "status": o["p_status"], "error": o["p_error"],
                        "now": o["p_now"].isoformat(), "started": o["p_started"].isoformat(),
                        "output": o["p_output"], "metrics": o["p_metrics"], "result_id": str(o["p_result"])}
                       for o in outcomes], allow_nan=False)
    moved = conn.execute(_FINISH_GROUP, {"p_rows": rows, "p_user": user_id, "p_type": agent_type}).scalars()
    return set(moved)


#: `_FINISH_AND_RESULT` for a JSON array of outcomes: the same columns and conditions, plus the owner and type.
_FINISH_GROUP = text("""
WITH v AS (
    SELECT (r ->> 'task_id')::uuid AS task_id, (r ->> 'status')::varchar AS status, r -> 'error' AS error,
           (r ->> 'now')::timestamptz AS now, (r ->> 'started')::timestamptz AS started,
           r -> 'output' AS output, r -> 'metrics' AS metrics, (r ->> 'result_id')::uuid AS result_id
    FROM jsonb_array_elements(CAST(:p_rows AS jsonb)) AS r),
moved AS (
    UPDATE tasks AS t
    SET status = v.status, error = v.error, completed_at = v.now, updated_at = v.now, lease_expires_at = NULL,
        started_at = v.started
    FROM v
    WHERE t.id = v.task_id AND t.user_id = :p_user AND t.agent_type = :p_type AND t.status = 'processing'
    RETURNING t.id)
INSERT INTO task_results (id, task_id, status, output_data, metrics, created_at)
SELECT v.result_id, v.task_id, v.status, v.output, v.metrics, v.now FROM v JOIN moved ON moved.id = v.task_id
RETURNING task_id
""").bindparams(bindparam("p_user", type_=Uuid()), bindparam("p_type", type_=String()))


def store_plain_outcome(conn: Connection, outcome: dict[str, Any], *, finish_tried: bool = False) -> bool:
    """`store_outcome` for a task that is neither a workflow step nor an orchestrator, in Core statements.

    The same rules (moves only from `processing`; a run that finished after its task was cancelled or timed out
    is discarded, its result row recording the task's own status), in the caller's Core transaction. The
    statements are built once (module level): per task only their parameters are bound. `finish_tried`: the
    caller ran `finish_plain` already and it moved nothing; only the discarded result row is left to write.
    Returns whether the status moved.
    """
    if finish_tried:
        pass
    elif conn.dialect.name == "postgresql":
        if finish_plain(conn, outcome):
            return True
    elif conn.execute(_FINISH, outcome).rowcount:
        conn.execute(_RESULT, outcome)
        return True
    current = conn.scalar(_STATUS, outcome)
    if current in DISCARDING:
        metrics = {"duration_ms": outcome["p_metrics"].get("duration_ms", 0.0), "discarded": outcome["p_status"]}
        outcome = {**outcome, "p_output": {}, "p_metrics": metrics, "p_status": current}
    conn.execute(_RESULT, outcome)
    return False


def _plain_statements() -> tuple[Any, Any, Any, Any]:
    json_param = functools.partial(bindparam, type_=JSONType)
    finish = (update(Task)
              .where(Task.id == bindparam("p_task"), Task.status == TaskStatus.PROCESSING)
              .values(status=bindparam("p_status", type_=String()), error=json_param("p_error"),
                      completed_at=bindparam("p_now", type_=UTCDateTime()),
                      updated_at=bindparam("p_now", type_=UTCDateTime()), lease_expires_at=None,
                      started_at=bindparam("p_started", type_=UTCDateTime())))
    result_values = {"id": bindparam("p_result", type_=Uuid()), "status": bindparam("p_status", type_=String()),
                     "output_data": json_param("p_output"), "metrics": json_param("p_metrics"),
                     "created_at": bindparam("p_now", type_=UTCDateTime())}
    moved = finish.returning(Task.id).cte("moved")
    columns: list[Any] = [result_values[c] if c != "task_id" else moved.c.id for c in _RESULT_COLUMNS]
    row = select(*columns).select_from(moved)
    finish_and_result = insert(TaskResult).from_select(_RESULT_COLUMNS, row).returning(TaskResult.id)
    result = insert(TaskResult).values(task_id=bindparam("p_task"), **result_values)
    status = select(Task.status).where(Task.id == bindparam("p_task"))
    return finish_and_result, finish, result, status


_RESULT_COLUMNS = ["id", "task_id", "status", "output_data", "metrics", "created_at"]
_FINISH_AND_RESULT, _FINISH, _RESULT, _STATUS = _plain_statements()
