"""The lane rule (chalicelib/domain/lanes.py), the names it maps to, and the consumer finding its agent type
from either lane's queue (docs/scheduling.md)."""

from __future__ import annotations

import pytest

from chalicelib import capacity
from chalicelib.domain.lanes import (
    BULK_SUFFIX,
    Allowances,
    Lane,
    OwnerLoad,
    agent_type_of,
    choose,
    destination,
    lane_of,
)
from functions.agent_consumer import queue_agent_type
from infra import manifest

DEFAULT = Allowances()


@pytest.mark.parametrize(("priority", "active", "urgent", "lane"), [
    ("normal", 0, 0, Lane.FAST),  # a light owner's first task
    ("normal", 9, 0, Lane.FAST),  # the 10th active task is still within the share
    ("low", 1, 0, Lane.FAST),  # low work: a light owner's first two tasks
    ("low", 2, 0, Lane.BULK),  # ... then the bulk lane (the low allowance), however light the owner
    ("normal", 10, 0, Lane.BULK),  # the 11th goes to bulk
    ("critical", 10, 0, Lane.FAST),  # a heavy owner's urgent task skips its own burst
    ("high", 500, 4, Lane.FAST),  # ... up to its urgent allowance
    ("critical", 500, 5, Lane.BULK),  # marking everything critical buys 5 fast slots, no more
    ("high", 3, 5, Lane.FAST),  # past the urgent allowance, the share still applies
])
def test_the_rule(priority: str, active: int, urgent: int, lane: Lane) -> None:
    assert choose(priority, OwnerLoad(active=active, urgent=urgent), DEFAULT) is lane


def test_a_share_of_zero_sends_all_normal_work_to_bulk_but_urgent_stays_fast() -> None:
    none = Allowances(share=0, urgent=5)
    assert choose("normal", OwnerLoad(0, 0), none) is Lane.BULK
    assert choose("critical", OwnerLoad(0, 0), none) is Lane.FAST


def test_the_count_goes_as_far_as_the_larger_allowance_needs() -> None:
    from chalicelib.domain.lanes import active_cap

    assert active_cap(DEFAULT) == 10
    wide = Allowances(share=3, low=7)
    assert active_cap(wide) == 7 and choose("low", OwnerLoad(6, 0), wide) is Lane.FAST
    assert choose("normal", OwnerLoad(6, 0), wide) is Lane.BULK


def test_destinations_and_queue_names_map_back_to_the_agent_type() -> None:
    assert destination("validation", Lane.FAST) == "validation"
    assert destination("validation", Lane.BULK) == "validation-bulk"
    assert agent_type_of("validation-bulk") == agent_type_of("validation") == "validation"
    assert lane_of("validation-bulk") is Lane.BULK and lane_of("validation") is Lane.FAST
    assert not any(t.endswith("-bulk") for t in manifest.AGENT_CONSUMERS)  # or agent_type_of would be ambiguous
    assert manifest.BULK_SUFFIX == BULK_SUFFIX  # the manifest cannot import chalicelib.domain (LocalStack hook)


@pytest.mark.parametrize("arn", ["arn:aws:sqs:us-east-1:123456789012:ymera-dev-agent-validation",
                                 "arn:aws:sqs:us-east-1:123456789012:ymera-dev-agent-validation-bulk"])
def test_the_consumer_reads_its_agent_type_from_either_lane(arn: str) -> None:
    assert queue_agent_type(arn) == "validation"


def test_the_manifest_splits_each_types_concurrency_between_its_lanes_within_the_budget() -> None:
    specs = {f.name: f for f in manifest.functions()}
    for agent_type in manifest.AGENT_CONSUMERS:
        fast, bulk = specs[f"agent-{agent_type}"], specs[f"agent-{agent_type}-bulk"]
        assert fast.handler == bulk.handler == "functions.agent_consumer.handler"
        assert fast.queue == manifest.agent_queue(agent_type) and bulk.queue == manifest.bulk_queue(agent_type)
        assert bulk.queue is not None and bulk.queue.dlq_suffix == f"agent-{agent_type}-dlq"
        assert fast.max_concurrency == capacity.MIN_EVENT_SOURCE_CONCURRENCY <= bulk.max_concurrency
        assert fast.max_concurrency + bulk.max_concurrency == capacity.agent_max_concurrency(agent_type)
    assert manifest.database_connections(specs.values()) == capacity.consumer_connections(manifest.AGENT_CONSUMERS)
    assert manifest.database_connections(specs.values()) <= capacity.DB_CONNECTION_BUDGET
