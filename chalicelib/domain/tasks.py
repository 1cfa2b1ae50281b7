"""Task lifecycle rules. Pure: no I/O.

pending → queued → processing → completed | failed | cancelled | timed_out

Every transition is a conditional UPDATE whose WHERE names the states it may
leave (CLAIMABLE, CANCELLABLE, `processing` for a result), so a stale or
duplicate message can never move a finished task. The one way back is a
retry of an external agent's task (lease expired without heartbeat, or a
`retryable` failure): `processing → queued`, attempts counted, until the
attempt limit fails it. Managed tasks retry inside SQS: the claim is given
back (`queued`) and the message returns after a backoff (ChangeMessageVisibility).
`timed_out` is set by the task reaper (services/reaper.py) for a task stuck
`processing`; a running task that is cancelled or times out has its run discarded.
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

#: States from which a consumer may claim a task.
CLAIMABLE = (TaskStatus.PENDING, TaskStatus.QUEUED)

#: States a user may cancel from.
CANCELLABLE = (TaskStatus.PENDING, TaskStatus.QUEUED, TaskStatus.PROCESSING)
