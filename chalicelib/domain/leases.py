"""Lease rules for external agents (self-hosted workers). Pure: no I/O.

A worker leases a task for `lease_seconds`; each lease counts one attempt. Heartbeats
extend the leases it holds. A lease that passes without a heartbeat returns the task
to the queue, unless the attempts are used up: then the task fails with LEASE_EXPIRED.
"""

from __future__ import annotations

from enum import StrEnum

from chalicelib.domain.tasks import TaskPriority

LEASE_EXPIRED = "LEASE_EXPIRED"

#: Leasing hands out the most urgent work first, then the oldest.
PRIORITY_ORDER: dict[str, int] = {
    TaskPriority.CRITICAL: 0,
    TaskPriority.HIGH: 1,
    TaskPriority.NORMAL: 2,
    TaskPriority.LOW: 3,
}


class AgentMode(StrEnum):
    MANAGED = "managed"  # runs in the per-type Lambda consumer, fed by SQS
    EXTERNAL = "external"  # a worker the user runs anywhere; leases its tasks over HTTP


class Expiry(StrEnum):
    REQUEUE = "requeue"
    FAIL = "fail"


def on_expiry(attempts: int, max_attempts: int) -> Expiry:
    """What an expired lease does to its task: `attempts` already counts the lease that expired."""
    return Expiry.FAIL if attempts >= max_attempts else Expiry.REQUEUE


def may_retry(attempts: int, max_attempts: int) -> bool:
    """A worker reported a retryable failure: is there an attempt left?"""
    return attempts < max_attempts
