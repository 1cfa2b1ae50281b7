"""Which lane a managed agent's new task takes (docs/scheduling.md). Pure: no I/O; standard library only
(infra/manifest.py, imported by LocalStack hooks, names the bulk queues from BULK_SUFFIX).

Every agent type has two queues: the fast lane `{prefix}-agent-{type}` (what workflow steps, DLQ tools and
monitoring have always named) and the bulk lane `{prefix}-agent-{type}-bulk`, which share one DLQ. A task's lane
is chosen once, in its creating transaction, from its owner's *active* tasks of that type (pending, queued,
processing; the new task excluded):

1. priority critical or high, and fewer than `urgent_allowance` of those are critical/high -> fast;
2. otherwise fewer than `share_allowance` active tasks of the type (`low_allowance` for a `low` task) -> fast;
3. otherwise -> bulk.

So a light owner's work and anyone's few urgent tasks never wait behind a heavy owner's burst, and an owner
who marks everything critical gets only its small urgent allowance on the fast lane.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from chalicelib.domain.tasks import TaskPriority, TaskStatus

#: the bulk lane's queue is the fast lane's name + this; its outbox destination is the agent type + this.
BULK_SUFFIX = "-bulk"
URGENT: tuple[str, ...] = (TaskPriority.CRITICAL, TaskPriority.HIGH)
#: The urgent priorities are exactly those sorting at or below this one ("critical" < "high" < "low" <
#: "normal"), so the urgent count is an index range (chalicelib/services/lanes.py), not a list.
URGENT_AT_MOST = max(URGENT)
if any((p <= URGENT_AT_MOST) != (p in URGENT) for p in TaskPriority):  # a new priority name must keep this true
    raise RuntimeError("the urgent priorities must be the ones sorting first")
#: the owner's tasks that count against its allowances (still waiting or running).
ACTIVE: tuple[str, ...] = (TaskStatus.PENDING, TaskStatus.QUEUED, TaskStatus.PROCESSING)


class Lane(StrEnum):
    FAST = "fast"
    BULK = "bulk"


#: A bulk-lane message body's key naming its owner; the SQS publisher sends it as the MessageGroupId, so SQS
#: fair queues (standard queues, 2025) balance delivery between heavy owners sharing the bulk lane.
MESSAGE_GROUP = "message_group"


@dataclass(frozen=True)
class Allowances:
    share: int = 10  # active tasks of a type an owner may have before its normal work goes to bulk
    urgent: int = 5  # active critical/high tasks of a type an owner may have on the fast lane
    #: active tasks of a type an owner may have before its `low` work goes to bulk: low work is background
    #: work, and what it puts on the fast lane is what everybody's urgent tasks wait behind there.
    low: int = 2
    #: bulk-lane messages carry their owner as MessageGroupId (off for an endpoint that refuses it)
    bulk_message_groups: bool = True


@dataclass(frozen=True)
class OwnerLoad:
    """The owner's active tasks of the type, each count capped (counting stops at the allowance)."""

    active: int
    urgent: int


def choose(priority: str, load: OwnerLoad, allowances: Allowances) -> Lane:
    if priority in URGENT and load.urgent < allowances.urgent:
        return Lane.FAST
    if load.active < (allowances.low if priority == TaskPriority.LOW else allowances.share):
        return Lane.FAST
    return Lane.BULK


def active_cap(allowances: Allowances) -> int:
    """How far the owner's active tasks need counting: past the larger of the two allowances it reads, no
    answer changes."""
    return max(allowances.share, allowances.low)


def destination(agent_type: str, lane: Lane) -> str:
    """The outbox destination (= queue name without `{prefix}-agent-`): "validation" or "validation-bulk"."""
    return agent_type + BULK_SUFFIX if lane is Lane.BULK else agent_type


def agent_type_of(destination_or_queue_tail: str) -> str:
    """"validation-bulk" -> "validation"; "validation" -> "validation". Agent type names never end in -bulk."""
    return destination_or_queue_tail.removesuffix(BULK_SUFFIX)


def lane_of(destination_or_queue_tail: str) -> Lane:
    return Lane.BULK if destination_or_queue_tail.endswith(BULK_SUFFIX) else Lane.FAST
