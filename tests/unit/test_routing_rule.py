"""The routing rule (chalicelib.engines.optimization) and the lease rules, as pure functions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.auth import agent_keys
from chalicelib.domain.leases import Expiry, may_retry, on_expiry
from chalicelib.engines.optimization import Candidate, choose, quality_estimate

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def agent(name: str, *, alpha: float = 1.0, beta: float = 1.0, in_flight: int = 0, backlog: int = 0,
          max_concurrency: int = 10, status: str = "active", age: int = 0) -> Candidate:
    """`age` in minutes: bigger is older. The id is derived from the name so failures read well."""
    return Candidate(agent_id=uuid.uuid5(uuid.NAMESPACE_DNS, name), status=status, max_concurrency=max_concurrency,
                     in_flight=in_flight, backlog=backlog, quality_alpha=alpha, quality_beta=beta,
                     created_at=T0 - timedelta(minutes=age))


def picked(*candidates: Candidate) -> uuid.UUID | None:
    chosen = choose(candidates).chosen
    return chosen.agent_id if chosen else None


def test_higher_quality_wins_over_lower_load() -> None:
    good = agent("good", alpha=9, beta=1, in_flight=5)
    idle = agent("idle", alpha=1, beta=1, in_flight=0)
    assert picked(idle, good) == good.agent_id


def test_equal_quality_prefers_fewer_in_flight_then_smaller_backlog_then_oldest() -> None:
    busy = agent("busy", in_flight=3)
    calm = agent("calm", in_flight=1, backlog=4)
    calmer = agent("calmer", in_flight=1, backlog=0)
    assert picked(busy, calm, calmer) == calmer.agent_id
    young, old = agent("young", age=1), agent("old", age=60)
    assert picked(young, old) == old.agent_id


def test_quality_is_the_posterior_mean_not_the_evidence() -> None:
    # 2/(2+2) == 1/(1+1): same mean, so the lighter-loaded agent wins the tie.
    rated = agent("rated", alpha=2, beta=2, in_flight=2)
    new = agent("new", alpha=1, beta=1, in_flight=0)
    assert picked(rated, new) == new.agent_id
    assert quality_estimate(3, 1) == 0.75
    assert quality_estimate(0, 0) == 0.5  # an unusable prior counts as "no information"


def test_agents_at_capacity_or_not_active_are_never_picked() -> None:
    full = agent("full", alpha=50, beta=1, in_flight=2, max_concurrency=2)
    offline = agent("offline", alpha=50, beta=1, status="offline")
    inactive = agent("inactive", alpha=50, beta=1, status="inactive")
    poor = agent("poor", alpha=1, beta=50)
    assert picked(full, offline, inactive, poor) == poor.agent_id


def test_no_eligible_agent_explains_why() -> None:
    decision = choose([agent("a", in_flight=1, max_concurrency=1), agent("b", in_flight=4, max_concurrency=4),
                       agent("c", status="inactive")])
    assert decision.chosen is None
    assert (decision.total, decision.active, decision.at_capacity) == (3, 2, 2)
    assert choose([]).chosen is None and choose([]).total == 0


@pytest.mark.parametrize(("attempts", "max_attempts", "expected"), [
    (1, 3, Expiry.REQUEUE), (2, 3, Expiry.REQUEUE), (3, 3, Expiry.FAIL), (4, 3, Expiry.FAIL), (1, 1, Expiry.FAIL)])
def test_an_expired_lease_requeues_until_the_attempts_are_used_up(attempts: int, max_attempts: int,
                                                                   expected: Expiry) -> None:
    assert on_expiry(attempts, max_attempts) is expected
    assert may_retry(attempts, max_attempts) is (expected is Expiry.REQUEUE)


def test_agent_keys_are_random_prefixed_and_checked_against_their_hash_only() -> None:
    key = agent_keys.new_key()
    assert key.startswith("ymk_") and len(key) > 40 and key != agent_keys.new_key()
    stored = agent_keys.hash_key(key)
    assert key not in stored and len(stored) == 64
    assert agent_keys.matches(stored, key)
    assert not agent_keys.matches(stored, key + "x")
    assert not agent_keys.matches(stored, None) and not agent_keys.matches(None, key)
    assert not agent_keys.matches(stored, "k" * 10_000)  # refused unread
