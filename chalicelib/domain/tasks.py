"""Task lifecycle rules. Pure: no I/O.

pending → queued → processing → completed | failed | cancelled | timed_out

A transition only moves forward, so a stale or duplicate message can never
move a task backwards. Retries keep a task in `processing` (its lease
expires and the next delivery re-claims it) and count attempts.
"""

from __future__ import annotations

from enum import StrEnum


class TaskStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


class TaskPriority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    CRITICAL = "critical"


TERMINAL = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.TIMED_OUT})

#: States from which a consumer may claim a task (processing only once its lease expired).
CLAIMABLE = (TaskStatus.PENDING, TaskStatus.QUEUED)

#: States a user may cancel from.
CANCELLABLE = (TaskStatus.PENDING, TaskStatus.QUEUED, TaskStatus.PROCESSING)

_ALLOWED: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PENDING: frozenset({TaskStatus.QUEUED, TaskStatus.PROCESSING, TaskStatus.CANCELLED}),
    TaskStatus.QUEUED: frozenset({TaskStatus.PROCESSING, TaskStatus.CANCELLED}),
    TaskStatus.PROCESSING: frozenset(
        {TaskStatus.PROCESSING, TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.TIMED_OUT}
    ),
}


def can_transition(current: TaskStatus, target: TaskStatus) -> bool:
    return target in _ALLOWED.get(current, frozenset())
