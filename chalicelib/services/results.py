"""Recording a task's outcome: the one code path for managed consumers, external workers and the lease reaper."""

from __future__ import annotations

import math
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from chalicelib.db.models import Task, TaskResult
from chalicelib.db.types import utcnow
from chalicelib.domain.tasks import TaskStatus

REPLACEMENT = "\ufffd"


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
                  started_at: datetime | None = None) -> bool:
    """Write the result row and finish the task, in the caller's transaction.

    The status moves only from `processing`, so a stale writer never moves a task backwards;
    the result row is written either way (a task cancelled while it ran still gets the
    result of that run). `started_at`, when given, is when the run really started (a batch claims
    its tasks before running them one by one). Text Postgres cannot store is replaced first (`storable`), so a model's
    reply can never leave a task unfinishable. A finished step of an orchestrator moves its parent on, in the same
    transaction. Returns whether the status moved.
    """
    now = now or utcnow()
    output, metrics, error = storable(output), storable(metrics), storable(error)
    session.add(TaskResult(task_id=task_id, status=status, output_data=output, metrics=metrics))
    moved = session.execute(
        update(Task)
        .where(Task.id == task_id, Task.status == TaskStatus.PROCESSING)
        .values(status=status, error=error, completed_at=now, updated_at=now, lease_expires_at=None,
                **({"started_at": started_at} if started_at is not None else {}))
        .returning(Task.parent_task_id)
        .execution_options(synchronize_session=False)
    ).first()
    if moved is None:
        return False
    if moved.parent_task_id is not None:
        # Only subtasks pay for importing the orchestrator: start dependent steps, or finish the parent.
        from chalicelib.services.orchestration import on_task_finished

        on_task_finished(session, task_id)
    return True
